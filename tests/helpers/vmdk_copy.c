/* SPDX-License-Identifier: MIT */
/*
 * Test helper for tests/e2e/vmdk.sh: copies the guest contents of one
 * image into another, existing image through libimg, the way convert
 * does (ascending 1 MiB chunks, all-zero chunks skipped), so the VMDK
 * driver can be exercised before and independently of imgtool convert.
 *
 *   vmdk_copy [-s] [-f SRCFMT] [-F DSTFMT] [-n] SRC DST
 *     -s  open DST with IMG_OPEN_SEQUENTIAL (streamOptimized)
 *     -n  do not open SRC's backing chain
 *   vmdk_copy -w OFFSET FILE DST     write FILE's bytes into DST at OFFSET
 *   vmdk_copy -z OFFSET LEN DST      write_zeroes(MAY_UNMAP) on DST
 */
#include "img.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CHUNK (1u << 20)

static int open_or_die(struct img **img, const char *path, const char *fmt,
		       unsigned flags)
{
	struct img_open_options o = { .format = fmt, .flags = flags };
	char err[IMG_ERRMSG_MAX];

	if (img_open(img, path, &o, err, sizeof(err))) {
		fprintf(stderr, "vmdk_copy: %s\n", err);
		exit(1);
	}
	return 0;
}

static int fail(struct img *img, const char *what)
{
	fprintf(stderr, "vmdk_copy: %s: %s\n", what, img_errmsg(img));
	return 1;
}

static int write_file(uint64_t off, const char *file, const char *dst)
{
	struct img *d;
	struct stat st;
	char *buf;
	int fd = open(file, O_RDONLY), ret;

	if (fd < 0 || fstat(fd, &st)) {
		perror(file);
		return 1;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf || read(fd, buf, (size_t)st.st_size) != st.st_size) {
		perror(file);
		return 1;
	}
	close(fd);
	open_or_die(&d, dst, NULL, IMG_OPEN_RDWR);
	if (img_pwrite(d, buf, (size_t)st.st_size, off))
		return fail(d, "write");
	ret = img_close(d);
	free(buf);
	return ret ? 1 : 0;
}

static int zero_range(uint64_t off, uint64_t len, const char *dst)
{
	struct img *d;

	open_or_die(&d, dst, NULL, IMG_OPEN_RDWR);
	if (img_write_zeroes(d, off, len, IMG_ZERO_MAY_UNMAP))
		return fail(d, "write_zeroes");
	return img_close(d) ? 1 : 0;
}

int main(int argc, char **argv)
{
	const char *sfmt = NULL, *dfmt = NULL;
	unsigned dflags = IMG_OPEN_RDWR, sflags = IMG_OPEN_RDONLY;
	struct img *s, *d;
	uint64_t size, off;
	char *buf;
	int c;

	while ((c = getopt(argc, argv, "sf:F:nw:z:")) != -1) {
		switch (c) {
		case 's':
			dflags |= IMG_OPEN_SEQUENTIAL;
			break;
		case 'f':
			sfmt = optarg;
			break;
		case 'F':
			dfmt = optarg;
			break;
		case 'n':
			sflags |= IMG_OPEN_NO_BACKING;
			break;
		case 'w':
			if (argc - optind != 2)
				return 2;
			return write_file(strtoull(optarg, NULL, 0),
					  argv[optind], argv[optind + 1]);
		case 'z':
			if (argc - optind != 2)
				return 2;
			return zero_range(strtoull(optarg, NULL, 0),
					  strtoull(argv[optind], NULL, 0),
					  argv[optind + 1]);
		default:
			return 2;
		}
	}
	if (argc - optind != 2) {
		fprintf(stderr, "usage: vmdk_copy [-s] [-f FMT] [-F FMT] SRC "
				"DST\n");
		return 2;
	}
	open_or_die(&s, argv[optind], sfmt, sflags);
	open_or_die(&d, argv[optind + 1], dfmt, dflags);
	size = img_size(s);
	if (img_size(d) < size) {
		fprintf(stderr, "vmdk_copy: destination is smaller\n");
		return 1;
	}
	buf = malloc(CHUNK);
	if (!buf)
		return 1;
	for (off = 0; off < size; off += CHUNK) {
		size_t n = size - off < CHUNK ? (size_t)(size - off) : CHUNK;
		size_t i;

		if (img_pread(s, buf, n, off))
			return fail(s, "read");
		for (i = 0; i < n && !buf[i]; i++)
			;
		if (i == n)
			continue;
		if (img_pwrite(d, buf, n, off))
			return fail(d, "write");
	}
	free(buf);
	if (img_close(d)) {
		fprintf(stderr, "vmdk_copy: close failed\n");
		return 1;
	}
	img_close(s);
	return 0;
}
