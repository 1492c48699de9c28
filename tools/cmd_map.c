/* SPDX-License-Identifier: MIT */
/*
 * imgtool map: the allocation of the whole virtual disk as extents, merged
 * the way qemu-img map merges them, so that its JSON compares with
 * `qemu-img map --output=json`.
 */
#include "tools/cmdline.h"

#include "img.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

struct map_entry {
	uint64_t start;
	uint64_t length;
	int depth;    /* layer the data comes from; chain end if none */
	bool present; /* allocated in some layer */
	bool zero;
	bool data;
	int64_t offset; /* host offset, -1 if none */
};

enum map_output { MAP_HUMAN, MAP_JSON };

struct map {
	enum map_output output;
	struct img *img;
	int nlayers;
	uint64_t count;
};

static const char *map_layer_name(struct map *m, int depth)
{
	struct img *layer = m->img;

	for (int i = 0; i < depth && layer; i++)
		layer = img_backing(layer);
	return layer ? img_filename(layer) : "";
}

static void map_print(struct map *m, const struct map_entry *e)
{
	if (m->output == MAP_JSON) {
		printf("%s{ \"start\": %" PRIu64 ", \"length\": %" PRIu64
		       ", \"depth\": %d, \"present\": %s, \"zero\": %s"
		       ", \"data\": %s",
		       m->count ? ",\n" : "[", e->start, e->length, e->depth,
		       e->present ? "true" : "false",
		       e->zero ? "true" : "false", e->data ? "true" : "false");
		if (e->offset >= 0)
			printf(", \"offset\": %" PRId64, e->offset);
		printf("}");
	} else {
		const char *kind = e->data	? "data"
				   : e->present ? "zero"
						: "unallocated";
		char offset[32] = "-";

		if (m->count == 0)
			printf("%-18s %-18s %-12s %-5s %-18s %s\n", "Start",
			       "Length", "Kind", "Depth", "Host offset",
			       "File");
		if (e->offset >= 0)
			snprintf(offset, sizeof(offset), "0x%" PRIx64,
				 (uint64_t)e->offset);
		printf("0x%-16" PRIx64 " 0x%-16" PRIx64 " %-12s %-5d %-18s ",
		       e->start, e->length, kind, e->depth, offset);
		if (e->present)
			fputs(map_layer_name(m, e->depth), stdout);
		putchar('\n');
	}
	m->count++;
}

static bool map_can_merge(const struct map_entry *a, const struct map_entry *b)
{
	if (a->depth != b->depth || a->present != b->present ||
	    a->zero != b->zero || a->data != b->data)
		return false;
	if ((a->offset < 0) != (b->offset < 0))
		return false;
	return a->offset < 0 ||
	       (uint64_t)a->offset + a->length == (uint64_t)b->offset;
}

static void map_usage(FILE *out)
{
	fprintf(out,
		"Usage: imgtool map [--output=human|json] [-f FMT] [-U] FILE\n"
		"Show how the whole virtual disk is allocated, following the backing\n"
		"chain: extents of data, zeros and unallocated space, the layer (depth)\n"
		"each comes from and where its data lies in the host file.\n"
		"\n"
		"  --output=json   a JSON array of {start, length, depth, present, zero,\n"
		"                  data[, offset]} as qemu-img map prints it\n"
		"  -f FMT          image format (default: probed)\n"
		"  -U              do not lock the image (--force-share)\n"
		"Exit status: 0 success, 1 failure, 2 usage error.\n");
}

int cmd_map(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "output", required_argument, NULL, 'o' },
		{ "force-share", no_argument, NULL, 'U' },
		{ NULL, 0, NULL, 0 },
	};
	struct map m = { .output = MAP_HUMAN };
	const char *format = NULL;
	unsigned flags = IMG_OPEN_RDONLY;
	struct map_entry cur = { 0 };
	bool have = false, json = false;
	uint64_t size, pos = 0;
	int opt, ret, status = TOOL_EXIT_FAILURE;

	opterr = 0;
	while ((opt = getopt_long(argc, argv, "hf:U", longopts, NULL)) != -1) {
		switch (opt) {
		case 'h':
			map_usage(stdout);
			return 0;
		case 'o':
			if (tool_parse_output("map", optarg, &json))
				return TOOL_EXIT_USAGE;
			m.output = json ? MAP_JSON : MAP_HUMAN;
			break;
		case 'f':
			format = optarg;
			break;
		case 'U':
			flags |= IMG_OPEN_NO_LOCK;
			break;
		default:
			return cmdline_bad_option("map", argv);
		}
	}
	if (argc - optind != 1)
		return tool_usage_error("map", "needs one image file");
	if (tool_open(&m.img, argv[optind], format, flags) < 0)
		return TOOL_EXIT_FAILURE;
	for (struct img *l = m.img; l; l = img_backing(l))
		m.nlayers++;
	size = img_size(m.img);

	while (pos < size) {
		struct img_extent ext;
		struct map_entry e;

		ret = img_block_status(m.img, pos, size - pos, &ext);
		if (ret < 0) {
			cmdline_img_error(m.img, ret);
			goto out;
		}
		e.start = pos;
		e.length = ext.length < size - pos ? ext.length : size - pos;
		e.present = ext.depth >= 0;
		e.depth = ext.depth >= 0 ? ext.depth : m.nlayers - 1;
		e.zero = ext.flags & IMG_EXTENT_ZERO;
		e.data = ext.flags & IMG_EXTENT_DATA;
		e.offset = e.data ? ext.file_offset : -1;
		if (e.offset < 0)
			e.offset = -1;
		if (have && map_can_merge(&cur, &e)) {
			cur.length += e.length;
		} else {
			if (have)
				map_print(&m, &cur);
			cur = e;
			have = true;
		}
		pos += e.length;
	}
	if (have)
		map_print(&m, &cur);
	if (m.output == MAP_JSON)
		printf("%s]\n", m.count ? "" : "[");
	status = TOOL_EXIT_OK;
out:
	img_close(m.img);
	return status;
}
