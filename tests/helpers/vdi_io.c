/* SPDX-License-Identifier: MIT */
/*
 * vdi_io: drive libimg directly from the VDI tests (independent of the
 * imgtool commands).
 *   vdi_io dump IMG RAW            read the whole image into a raw file
 *   vdi_io load IMG RAW            write a raw file over the image
 *   vdi_io loadsparse IMG RAW      the same, skipping all-zero MiBs
 *   vdi_io create IMG SIZE [fixed] [PARENT]
 *   vdi_io resize IMG SIZE [shrink]
 *   vdi_io discard IMG OFF LEN     (also: zero IMG OFF LEN [unmap])
 *   vdi_io check IMG [leaks|all]   prints corruptions/leaks/fixed
 *   vdi_io crash IMG RAW N         load, but _exit() at the Nth host write
 */
#include "img.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHUNK (1u << 20)

static long crash_after = -1;

static int crash_hook(enum img_io_op op, int fd, uint64_t off, uint64_t len,
		      void *opaque)
{
	(void)op;
	(void)fd;
	(void)off;
	(void)len;
	(void)opaque;
	if (crash_after >= 0 && crash_after-- == 0)
		_exit(99);
	return 0;
}

static bool chunk_is_zero(const char *buf, size_t n)
{
	return !buf[0] && !memcmp(buf, buf + 1, n - 1);
}

static int die(const char *what, const char *msg)
{
	fprintf(stderr, "vdi_io: %s: %s\n", what, msg);
	return 1;
}

static int open_image(struct img **img, const char *path, unsigned flags)
{
	char err[IMG_ERRMSG_MAX];
	struct img_open_options o = { .flags = flags };

	if (img_open(img, path, &o, err, sizeof(err)) < 0)
		return die("open", err);
	return 0;
}

static int copy(struct img *img, const char *raw, bool to_raw, bool sparse)
{
	uint64_t size = img_size(img);
	char *buf = malloc(CHUNK);
	int fd = to_raw ? open(raw, O_WRONLY | O_CREAT | O_TRUNC, 0644)
			: open(raw, O_RDONLY);
	int ret = 0;

	if (!buf || fd < 0)
		return die(raw, "cannot open");
	if (to_raw && ftruncate(fd, (off_t)size) < 0)
		ret = -1;
	for (uint64_t off = 0; off < size && !ret; off += CHUNK) {
		size_t n = size - off < CHUNK ? size - off : CHUNK;

		if (sparse && !to_raw) {
			/* skip the raw file's holes */
			off_t data = lseek(fd, (off_t)off, SEEK_DATA);

			if (data < 0)
				break;
			if ((uint64_t)data >= off + CHUNK) {
				off = (uint64_t)data / CHUNK * CHUNK - CHUNK;
				continue;
			}
		}
		if (to_raw) {
			if (img_pread(img, buf, n, off) < 0)
				ret = die("read", img_errmsg(img));
			else if (chunk_is_zero(buf, n))
				continue; /* the file was truncated: a hole */
			else if (pwrite(fd, buf, n, (off_t)off) != (ssize_t)n)
				ret = die(raw, "write failed");
		} else {
			if (pread(fd, buf, n, (off_t)off) != (ssize_t)n)
				ret = die(raw, "short read");
			else if (sparse && chunk_is_zero(buf, n))
				continue;
			else if (img_pwrite(img, buf, n, off) < 0)
				ret = die("write", img_errmsg(img));
		}
	}
	close(fd);
	free(buf);
	return ret;
}

int main(int argc, char **argv)
{
	char err[IMG_ERRMSG_MAX];
	struct img *img = NULL;
	uint64_t a, b;
	int ret = 0;

	if (argc < 3)
		return die("usage", "see the source");
	if (!strcmp(argv[1], "create") && argc >= 4) {
		struct img_create_options o = { .format = "vdi" };

		if (img_parse_size(argv[3], &o.size) < 0)
			return die("size", argv[3]);
		for (int i = 4; i < argc; i++) {
			if (!strcmp(argv[i], "fixed"))
				o.subformat = "fixed";
			else
				o.backing_file = argv[i];
		}
		if (img_create(argv[2], &o, err, sizeof(err)) < 0)
			return die("create", err);
		return 0;
	}
	if (!strcmp(argv[1], "dump") && argc == 4) {
		if (open_image(&img, argv[2], IMG_OPEN_RDONLY))
			return 1;
		ret = copy(img, argv[3], true, false);
	} else if ((!strcmp(argv[1], "load") || !strcmp(argv[1], "crash") ||
		    !strcmp(argv[1], "loadsparse")) &&
		   argc >= 4) {
		if (argc == 5) {
			crash_after = atol(argv[4]);
			img_set_io_hook(crash_hook, NULL);
		}
		if (open_image(&img, argv[2], IMG_OPEN_RDWR))
			return 1;
		ret = copy(img, argv[3], false, !strcmp(argv[1], "loadsparse"));
	} else if (!strcmp(argv[1], "resize") && argc >= 4) {
		if (img_parse_size(argv[3], &a) < 0)
			return die("size", argv[3]);
		if (open_image(&img, argv[2], IMG_OPEN_RDWR))
			return 1;
		if (img_resize(img, a, argc > 4 ? IMG_RESIZE_SHRINK : 0) < 0)
			ret = die("resize", img_errmsg(img));
	} else if ((!strcmp(argv[1], "discard") || !strcmp(argv[1], "zero")) &&
		   argc >= 5) {
		if (img_parse_size(argv[3], &a) < 0 ||
		    img_parse_size(argv[4], &b) < 0)
			return die("range", argv[3]);
		if (open_image(&img, argv[2], IMG_OPEN_RDWR))
			return 1;
		if (argv[1][0] == 'd')
			ret = img_discard(img, a, b);
		else
			ret = img_write_zeroes(
				img, a, b, argc > 5 ? IMG_ZERO_MAY_UNMAP : 0);
		if (ret < 0)
			ret = die(argv[1], img_errmsg(img));
	} else if (!strcmp(argv[1], "check")) {
		struct img_check_result r = { 0 };
		unsigned fix = 0;

		if (argc > 3)
			fix = !strcmp(argv[3], "all")
				      ? IMG_CHECK_FIX_LEAKS |
						IMG_CHECK_FIX_ERRORS
				      : IMG_CHECK_FIX_LEAKS;
		if (open_image(&img, argv[2],
			       IMG_OPEN_CHECK | (fix ? IMG_OPEN_RDWR : 0)))
			return 1;
		if (img_check(img, &r, fix) < 0)
			ret = die("check", img_errmsg(img));
		for (int i = 0; i < r.nmessages; i++)
			fprintf(stderr, "%s\n", r.messages[i]);
		printf("corruptions=%llu leaks=%llu corruptions_fixed=%llu "
		       "leaks_fixed=%llu allocated=%llu end=%llu\n",
		       (unsigned long long)r.corruptions,
		       (unsigned long long)r.leaks,
		       (unsigned long long)r.corruptions_fixed,
		       (unsigned long long)r.leaks_fixed,
		       (unsigned long long)r.allocated_clusters,
		       (unsigned long long)r.image_end_offset);
	} else {
		return die("usage", "see the source");
	}
	if (img && img_close(img) < 0 && !ret)
		ret = die("close", "flush failed");
	return ret ? 1 : 0;
}
