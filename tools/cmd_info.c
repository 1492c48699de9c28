/* SPDX-License-Identifier: MIT */
/* imgtool info [-f FMT] [--output=human|json] [--backing-chain] [-U] FILE */
#include "tools/common.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static void info_usage(FILE *out)
{
	fputs("Usage: imgtool info [-f FMT] [--output=human|json] [--backing-chain] [-U] FILE\n\nShow an image's format, virtual and allocated size, cluster size, backing file\nand format-specific details.\n\n  -f FMT            do not probe: open as FMT\n  --output=FORMAT   human (default) or json (qemu-img's keys)\n  --backing-chain   also every backing file, child first (JSON: an array)\n  -U, --force-share open even if another process holds the image's lock\nExit status: 0 success, 1 failure, 2 usage error.\n",
	      out);
}

static void info_print_kv_human(const struct img_kv *kv)
{
	switch (kv->type) {
	case IMG_KV_STRING:
		printf("    %s: %s\n", kv->key, kv->str);
		break;
	case IMG_KV_INT:
		printf("    %s: %" PRId64 "\n", kv->key, kv->num);
		break;
	case IMG_KV_BOOL:
		printf("    %s: %s\n", kv->key, kv->num ? "true" : "false");
		break;
	}
}

/* Bytes of the virtual disk this layer holds itself (block status);
 * -1 when the driver cannot say. */
static int64_t info_allocated(struct img *img)
{
	uint64_t size = img_size(img), pos = 0, total = 0;

	while (pos < size) {
		struct img_extent ext;
		uint64_t len;

		if (img_block_status_layer(img, pos, size - pos, &ext) < 0)
			return -1;
		len = ext.length < size - pos ? ext.length : size - pos;
		if (ext.flags & IMG_EXTENT_ALLOCATED)
			total += len;
		pos += len;
	}
	return (int64_t)total;
}

static void info_print_human(const struct img_info *info, int64_t allocated)
{
	char a[32], b[32];

	printf("image: %s\n", info->filename);
	printf("file format: %s\n", info->format);
	printf("virtual size: %s (%" PRIu64 " bytes)\n",
	       tool_human_size(info->virtual_size, a, sizeof(a)),
	       info->virtual_size);
	printf("disk size: %s\n",
	       info->actual_size_unknown
		       ? "unavailable"
		       : tool_human_size(info->actual_size, b, sizeof(b)));
	if (allocated >= 0)
		printf("allocated: %s (%.1f%% of the disk, in this file)\n",
		       tool_human_size((uint64_t)allocated, b, sizeof(b)),
		       info->virtual_size ? 100.0 * (double)allocated /
						    (double)info->virtual_size
					  : 0.0);
	if (info->subformat[0])
		printf("subformat: %s\n", info->subformat);
	if (info->cluster_size)
		printf("cluster_size: %" PRIu32 "\n", info->cluster_size);
	if (info->backing_filename[0]) {
		printf("backing file: %s", info->backing_filename);
		if (info->backing_full[0] &&
		    strcmp(info->backing_full, info->backing_filename) != 0)
			printf(" (actual path: %s)", info->backing_full);
		putchar('\n');
	} else if (info->backing_full[0]) {
		/* VDI records its parent by UUID only. */
		printf("backing file: %s (found by UUID)\n",
		       info->backing_full);
	}
	if (info->backing_format[0])
		printf("backing file format: %s\n", info->backing_format);
	if (info->uuid[0])
		printf("uuid: %s\n", info->uuid);
	if (info->parent_uuid[0])
		printf("parent uuid: %s\n", info->parent_uuid);
	if (info->geometry.cylinders)
		printf("geometry (C/H/S): %" PRIu32 "/%" PRIu32 "/%" PRIu32
		       "\n",
		       info->geometry.cylinders, info->geometry.heads,
		       info->geometry.sectors);
	if (info->dirty)
		printf("dirty: yes (not cleanly closed; run imgtool check)\n");
	if (info->nkv > 0) {
		printf("Format specific information:\n");
		for (int i = 0; i < info->nkv; i++)
			info_print_kv_human(&info->kv[i]);
	}
}

static void info_print_json(struct json_writer *wp, const struct img_info *info,
			    int64_t allocated)
{
	struct json_writer w = *wp;

	json_object_begin(&w, NULL);
	json_uint(&w, "virtual-size", info->virtual_size);
	json_string(&w, "filename", info->filename);
	if (info->cluster_size)
		json_uint(&w, "cluster-size", info->cluster_size);
	json_string(&w, "format", info->format);
	if (!info->actual_size_unknown)
		json_uint(&w, "actual-size", info->actual_size);
	if (allocated >= 0)
		json_uint(&w, "allocated-size", (uint64_t)allocated);
	if (info->subformat[0])
		json_string(&w, "subformat", info->subformat);
	if (info->nkv > 0) {
		json_object_begin(&w, "format-specific");
		json_string(&w, "type", info->format);
		json_object_begin(&w, "data");
		for (int i = 0; i < info->nkv; i++) {
			const struct img_kv *kv = &info->kv[i];

			if (kv->type == IMG_KV_STRING)
				json_string(&w, kv->key, kv->str);
			else if (kv->type == IMG_KV_INT)
				json_int(&w, kv->key, kv->num);
			else
				json_bool(&w, kv->key, kv->num != 0);
		}
		json_object_end(&w);
		json_object_end(&w);
	}
	if (info->backing_filename[0]) {
		json_string(&w, "backing-filename", info->backing_filename);
		json_string(&w, "full-backing-filename",
			    info->backing_full[0] ? info->backing_full
						  : info->backing_filename);
	} else if (info->backing_full[0]) {
		json_string(&w, "full-backing-filename", info->backing_full);
	}
	if (info->backing_format[0])
		json_string(&w, "backing-filename-format",
			    info->backing_format);
	if (info->uuid[0])
		json_string(&w, "uuid", info->uuid);
	if (info->parent_uuid[0])
		json_string(&w, "parent-uuid", info->parent_uuid);
	if (info->geometry.cylinders) {
		json_object_begin(&w, "geometry");
		json_uint(&w, "cylinders", info->geometry.cylinders);
		json_uint(&w, "heads", info->geometry.heads);
		json_uint(&w, "sectors", info->geometry.sectors);
		json_object_end(&w);
	}
	json_bool(&w, "dirty-flag", info->dirty);
	json_object_end(&w);
	*wp = w;
}

int cmd_info(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "format", required_argument, NULL, 'f' },
		{ "output", required_argument, NULL, 'O' },
		{ "force-share", no_argument, NULL, 'U' },
		{ "backing-chain", no_argument, NULL, 'c' },
		{ NULL, 0, NULL, 0 },
	};
	struct json_writer w;
	bool chain = false;
	int64_t allocated;
	const char *format = NULL;
	unsigned flags = IMG_OPEN_RDONLY | IMG_OPEN_NO_BACKING;
	bool json = false;
	struct img_info *info = NULL;
	struct img *img = NULL;
	int c, rc = TOOL_EXIT_FAILURE;

	while ((c = getopt_long(argc, argv, "hf:U", longopts, NULL)) != -1) {
		switch (c) {
		case 'h':
			info_usage(stdout);
			return TOOL_EXIT_OK;
		case 'f':
			format = optarg;
			break;
		case 'O':
			if (tool_parse_output("info", optarg, &json))
				return TOOL_EXIT_USAGE;
			break;
		case 'U':
			flags |= IMG_OPEN_NO_LOCK;
			break;
		case 'c':
			chain = true;
			break;
		default:
			return tool_usage_error("info", "bad option");
		}
	}
	if (optind >= argc)
		return tool_usage_error("info", "no image file given");
	if (optind + 1 < argc)
		return tool_usage_error("info", "unexpected argument '%s'",
					argv[optind + 1]);
	if (chain)
		flags &= ~(unsigned)IMG_OPEN_NO_BACKING;
	if (tool_open(&img, argv[optind], format, flags) < 0)
		return TOOL_EXIT_FAILURE;
	json_init(&w, stdout);
	if (json && chain)
		json_array_begin(&w, NULL);
	for (struct img *layer = img; layer;
	     layer = chain ? img_backing(layer) : NULL) {
		img_info_free(info);
		if (img_get_info(layer, &info) < 0) {
			tool_error("%s", img_errmsg(layer));
			goto out;
		}
		allocated = info_allocated(layer);
		if (json) {
			info_print_json(&w, info, allocated);
		} else {
			if (layer != img)
				putchar('\n');
			info_print_human(info, allocated);
		}
	}
	if (json && chain)
		json_array_end(&w);
	if (json)
		json_finish(&w);
	rc = TOOL_EXIT_OK;
out:
	img_info_free(info);
	img_close(img);
	return rc;
}
