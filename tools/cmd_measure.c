/* SPDX-License-Identifier: MIT */
/*
 * imgtool measure: how large the file of a conversion to -O FMT will be,
 * with the source's allocation ("required") and fully allocated.
 *
 * Rather than restating every driver's metadata layout, the target
 * format's own driver is asked: small probe images with the same options
 * and virtual size are created in a temporary directory and a few
 * clusters written into them; their file sizes give the fixed overhead,
 * the cost of one more cluster and, for formats that allocate metadata per
 * region (VMDK grain tables), the cost and span of one region.  The
 * source's allocation comes from block status.  Probe data is random, so
 * for compressed targets (streamOptimized) the figures are upper bounds.
 */
#include "tools/cmdline.h"

#include "img.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MEASURE_MAX_PROBE_WRITES 4

struct measure_target {
	const char *format;
	const char *options;
	uint64_t size;
	char dir[64];
	int probes;
};

/* Create a probe image, write one incompressible cluster at each offset,
 * close it, and return the total size of its files in *bytes. */
static int measure_probe(struct measure_target *t, const uint64_t *offsets,
			 int n, uint32_t cluster, uint64_t *bytes,
			 uint32_t *cluster_out)
{
	struct img_create_options co = {
		.format = t->format,
		.size = t->size,
		.options = t->options,
	};
	struct img_info *info = NULL;
	char errbuf[IMG_ERRMSG_MAX] = "", path[128];
	uint8_t *buf = NULL;
	struct img *img = NULL;
	int ret;

	snprintf(path, sizeof(path), "%s/probe%d.%s", t->dir, t->probes++,
		 t->format);
	ret = img_create(path, &co, errbuf, sizeof(errbuf));
	if (ret < 0) {
		tool_error("%s", errbuf[0] ? errbuf : strerror(-ret));
		goto out;
	}
	ret = tool_open(&img, path, t->format,
			IMG_OPEN_RDWR | IMG_OPEN_SEQUENTIAL);
	if (ret < 0)
		goto out;
	if (cluster_out)
		*cluster_out = img_cluster_size(img);
	if (n && cluster) {
		uint64_t state = 0x9e3779b97f4a7c15ull;

		buf = malloc(cluster);
		if (!buf) {
			ret = -ENOMEM;
			goto out;
		}
		for (uint32_t i = 0; i + 8 <= cluster; i += 8) {
			state ^= state << 13;
			state ^= state >> 7;
			state ^= state << 17;
			memcpy(buf + i, &state, 8);
		}
		for (int i = 0; i < n; i++) {
			if (offsets[i] + cluster > t->size)
				continue;
			ret = img_pwrite(img, buf, cluster, offsets[i]);
			if (ret < 0) {
				cmdline_img_error(img, ret);
				goto out;
			}
		}
	}
	ret = img_get_info(img, &info);
	if (ret < 0) {
		cmdline_img_error(img, ret);
		goto out;
	}
	ret = img_close(img);
	img = NULL;
	if (ret < 0)
		goto out;
	*bytes = 0;
	for (int i = 0; i < info->nfiles || i == 0; i++) {
		const char *f = info->nfiles ? info->files[i] : path;
		struct stat st;

		if (stat(f, &st) == 0)
			*bytes += (uint64_t)st.st_size;
		unlink(f);
	}
	unlink(path);
out:
	if (img)
		img_close(img);
	free(buf);
	img_info_free(info);
	return ret;
}

/* Clusters (of the target's size) holding data in the source, and how
 * many regions of `span` clusters they touch. */
static int measure_source(struct img *src, uint64_t cluster, uint64_t span,
			  uint64_t *clusters, uint64_t *regions)
{
	uint64_t size = img_size(src), pos = 0;
	uint64_t last_cluster = UINT64_MAX, last_region = UINT64_MAX;

	*clusters = 0;
	*regions = 0;
	while (pos < size) {
		struct img_extent ext;
		uint64_t len;
		int ret = img_block_status(src, pos, size - pos, &ext);

		if (ret < 0) {
			cmdline_img_error(src, ret);
			return ret;
		}
		len = ext.length < size - pos ? ext.length : size - pos;
		if (!(ext.flags & IMG_EXTENT_ZERO)) {
			uint64_t first = pos / cluster;
			uint64_t last = (pos + len - 1) / cluster;

			if (first == last_cluster)
				first++;
			if (first <= last) {
				*clusters += last - first + 1;
				for (uint64_t r = first / span;
				     r <= last / span; r++)
					if (r != last_region)
						(*regions)++;
				last_region = last / span;
			}
			last_cluster = last;
		}
		pos += len;
	}
	return 0;
}

static void measure_usage(FILE *out)
{
	fprintf(out,
		"Usage: imgtool measure -O FMT [-o OPTS] [--output=human|json]\n"
		"                       (--size SIZE | [-f FMT] SRC)\n"
		"Print the size of the file `imgtool convert -O FMT [-o OPTS] SRC` writes\n"
		"(\"required size\") and the size when every cluster is allocated.\n"
		"\n"
		"  -O FMT          target format (raw, vdi, vhd, vhdx, vmdk, qcow2)\n"
		"  -o OPTS         target create options (subformat=..., cluster_size=...)\n"
		"  --size SIZE     a new empty disk of SIZE instead of SRC\n"
		"  --output=json   {\"required\": N, \"fully-allocated\": N}\n"
		"  -f FMT          source format (default: probed)\n"
		"  -U              do not lock the source (--force-share)\n"
		"Figures come from the target driver itself (probe images in a temporary\n"
		"directory); for compressed targets they are upper bounds.\n"
		"Exit status: 0 success, 1 failure, 2 usage error.\n");
}

int cmd_measure(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "output", required_argument, NULL, 'j' },
		{ "size", required_argument, NULL, 's' },
		{ "force-share", no_argument, NULL, 'U' },
		{ NULL, 0, NULL, 0 },
	};
	struct measure_target t = { 0 };
	const char *src_format = NULL, *target_format = NULL;
	char *options = NULL;
	struct img *src = NULL;
	bool json = false, have_size = false;
	unsigned flags = IMG_OPEN_RDONLY;
	uint64_t base = 0, one = 0, two = 0, per_cluster = 0, region_cost = 0;
	uint64_t span = 1, clusters = 0, regions = 0, total_clusters = 0;
	uint64_t required, full;
	uint32_t cluster = 0;
	int opt, status = TOOL_EXIT_FAILURE;

	opterr = 0;
	while ((opt = getopt_long(argc, argv, "hO:o:f:U", longopts, NULL)) !=
	       -1) {
		switch (opt) {
		case 'h':
			measure_usage(stdout);
			return 0;
		case 'O':
			target_format = optarg;
			break;
		case 'o':
			if (tool_append_option(&options, optarg) < 0)
				return TOOL_EXIT_FAILURE;
			break;
		case 'f':
			src_format = optarg;
			break;
		case 's':
			if (tool_parse_size(optarg, &t.size) < 0)
				return TOOL_EXIT_USAGE;
			have_size = true;
			break;
		case 'j':
			if (strcmp(optarg, "json") && strcmp(optarg, "human"))
				return tool_usage_error(
					"measure",
					"--output wants human or json");
			json = strcmp(optarg, "json") == 0;
			break;
		case 'U':
			flags |= IMG_OPEN_NO_LOCK;
			break;
		default:
			return cmdline_bad_option("measure", argv);
		}
	}
	if (!target_format)
		return tool_usage_error("measure", "-O FMT is required");
	t.format = img_format_canonical(target_format);
	if (!t.format)
		return tool_usage_error("measure", "unknown format '%s'",
					target_format);
	if (tool_options_ask_help(options)) {
		tool_print_create_options(stdout, t.format);
		free(options);
		return 0;
	}
	t.options = options;
	if (have_size == (argc - optind == 1) || argc - optind > 1) {
		free(options);
		return tool_usage_error("measure",
					"needs either --size SIZE or one SRC");
	}
	if (!have_size) {
		if (tool_open(&src, argv[optind], src_format, flags) < 0)
			goto out;
		t.size = img_size(src);
	}
	snprintf(t.dir, sizeof(t.dir), "%s/imgtool-measure.XXXXXX",
		 getenv("TMPDIR") && strlen(getenv("TMPDIR")) < 30
			 ? getenv("TMPDIR")
			 : "/tmp");
	if (!mkdtemp(t.dir)) {
		tool_error("measure: cannot make a temporary directory: %s",
			   strerror(errno));
		goto out;
	}

	if (measure_probe(&t, NULL, 0, 0, &base, &cluster) < 0)
		goto out_dir;
	if (cluster) {
		uint64_t offs[MEASURE_MAX_PROBE_WRITES] = { 0, cluster };

		if (measure_probe(&t, offs, 1, cluster, &one, NULL) < 0 ||
		    measure_probe(&t, offs, 2, cluster, &two, NULL) < 0)
			goto out_dir;
		per_cluster = two > one ? two - one : 0;
		region_cost =
			one > base + per_cluster ? one - base - per_cluster : 0;
		/* How many clusters one region (grain table) covers. */
		if (region_cost) {
			for (span = 2; span < (1ull << 24); span *= 2) {
				uint64_t bytes;

				offs[1] = span * cluster;
				if (offs[1] + cluster > t.size)
					break;
				if (measure_probe(&t, offs, 2, cluster, &bytes,
						  NULL) < 0)
					goto out_dir;
				if (bytes > one + per_cluster)
					break;
			}
		}
		total_clusters = (t.size + cluster - 1) / cluster;
		if (src &&
		    measure_source(src, cluster, span, &clusters, &regions) < 0)
			goto out_dir;
	}
	required = base + clusters * per_cluster + regions * region_cost;
	full = base + total_clusters * per_cluster +
	       (total_clusters + span - 1) / span * region_cost;
	if (json)
		printf("{\n    \"required\": %" PRIu64
		       ",\n    \"fully-allocated\": %" PRIu64 "\n}\n",
		       required, full);
	else
		printf("required size: %" PRIu64
		       "\nfully allocated size: %" PRIu64 "\n",
		       required, full);
	status = TOOL_EXIT_OK;
out_dir:
	rmdir(t.dir);
out:
	if (src)
		img_close(src);
	free(options);
	return status;
}
