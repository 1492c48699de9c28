/* SPDX-License-Identifier: MIT */
/*
 * vhd_io: drives libimg directly for the VHD end-to-end tests, so they do
 * not depend on which imgtool commands exist.
 *
 *   vhd_io pattern RAW SIZE SEED      sparse random pattern file
 *   vhd_io read IMG OUT [flags]       whole virtual disk -> raw file
 *   vhd_io write IMG RAW [flags]      raw file -> image (zero chunks skipped)
 *   vhd_io cmp IMG RAW [flags]        exit 0 when the disk equals the file
 *   vhd_io check IMG [leaks|all]      run check (and repair), print counts
 *   vhd_io resize IMG SIZE [shrink]
 *   vhd_io rebase IMG PARENT|-        set_backing (parent opened read-only)
 *   vhd_io zero IMG OFF LEN [unmap]   write_zeroes
 *   vhd_io discard IMG OFF LEN
 *   vhd_io crash IMG RAW N            write RAW, die at the Nth host write
 *   vhd_io map IMG                    block status of this layer
 * flags: force, nobacking, parent=PATH
 */
#include "img.h"

#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CHUNK (1u << 20)

static uint8_t buf[CHUNK], other[CHUNK];

static int fail(const char *what, int err, const char *msg)
{
	fprintf(stderr, "vhd_io: %s: %s\n", what,
		msg && *msg ? msg : strerror(-err));
	return 1;
}

/* Report the handle's error, then release it. */
static int fail_img(struct img *img, const char *what, int err)
{
	fail(what, err, img_errmsg(img));
	img_close(img);
	return 1;
}

static int open_image(struct img **img, const char *path, unsigned flags,
		      int argc, char **argv, int first)
{
	struct img_open_options o = { .flags = flags };
	char err[IMG_ERRMSG_MAX] = "";
	int r;

	for (int i = first; i < argc; i++) {
		if (!strcmp(argv[i], "force"))
			o.flags |= IMG_OPEN_FORCE;
		else if (!strcmp(argv[i], "nobacking"))
			o.flags |= IMG_OPEN_NO_BACKING;
		else if (!strncmp(argv[i], "parent=", 7))
			o.backing_path = argv[i] + 7;
	}
	r = img_open(img, path, &o, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "vhd_io: %s\n", err);
		return r;
	}
	return 0;
}

static bool buf_is_zero(const uint8_t *buf, size_t len)
{
	return len == 0 || (buf[0] == 0 && !memcmp(buf, buf + 1, len - 1));
}

static uint64_t next_random(uint64_t *state)
{
	/* xorshift64*: deterministic patterns from a seed. */
	*state ^= *state >> 12;
	*state ^= *state << 25;
	*state ^= *state >> 27;
	return *state * 2685821657736338717ull;
}

static int cmd_pattern(const char *path, uint64_t size, uint64_t seed)
{
	uint64_t state = seed * 0x9e3779b97f4a7c15ull + 1;
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	if (fd < 0 || ftruncate(fd, (off_t)size) < 0)
		return fail(path, -errno, NULL);
	/* A few MiB of random data in pieces at random offsets, plus the
	 * very first and very last sectors. */
	for (int i = 0; i < 40; i++) {
		uint64_t len = 512 + next_random(&state) % (256 * 1024);
		uint64_t off = next_random(&state) % size;

		if (i == 0)
			off = 0;
		if (i == 1)
			off = size > 512 ? size - 512 : 0;
		if (off + len > size)
			len = size - off;
		for (uint64_t j = 0; j < len; j += 8) {
			uint64_t v = next_random(&state);

			memcpy(buf + j, &v, len - j < 8 ? len - j : 8);
		}
		if (pwrite(fd, buf, len, (off_t)off) != (ssize_t)len)
			return fail(path, -errno, NULL);
	}
	return close(fd) ? 1 : 0;
}

static int cmd_read(int argc, char **argv)
{
	struct img *img;
	int fd, r;

	if (open_image(&img, argv[2], IMG_OPEN_RDONLY, argc, argv, 4))
		return 1;
	fd = open(argv[3], O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		return fail(argv[3], -errno, NULL);
	for (uint64_t off = 0; off < img_size(img); off += CHUNK) {
		size_t n = img_size(img) - off < CHUNK ? img_size(img) - off
						       : CHUNK;

		r = img_pread(img, buf, n, off);
		if (r < 0)
			return fail_img(img, argv[2], r);
		if (buf_is_zero(buf, n)) {
			if (ftruncate(fd, (off_t)(off + n)) < 0)
				return fail(argv[3], -errno, NULL);
			continue;
		}
		if (pwrite(fd, buf, n, (off_t)off) != (ssize_t)n)
			return fail(argv[3], -errno, NULL);
	}
	close(fd);
	return img_close(img) < 0;
}

static int cmd_cmp(int argc, char **argv)
{
	struct img *img;
	struct stat st;
	int fd, r;

	fd = open(argv[3], O_RDONLY);
	if (fd < 0 || fstat(fd, &st) < 0)
		return fail(argv[3], -errno, NULL);
	if (open_image(&img, argv[2], IMG_OPEN_RDONLY, argc, argv, 4))
		return 1;
	if (img_size(img) != (uint64_t)st.st_size) {
		fprintf(stderr, "vhd_io: sizes differ: %llu and %llu\n",
			(unsigned long long)img_size(img),
			(unsigned long long)st.st_size);
		return 1;
	}
	for (uint64_t off = 0; off < img_size(img); off += CHUNK) {
		size_t n = img_size(img) - off < CHUNK ? img_size(img) - off
						       : CHUNK;

		r = img_pread(img, buf, n, off);
		if (r < 0)
			return fail_img(img, argv[2], r);
		if (pread(fd, other, n, (off_t)off) != (ssize_t)n)
			return fail(argv[3], -errno, NULL);
		if (memcmp(buf, other, n)) {
			fprintf(stderr, "vhd_io: differ in the MiB at %llu\n",
				(unsigned long long)off);
			return 1;
		}
	}
	close(fd);
	return img_close(img) < 0;
}

static int cmd_write(int argc, char **argv)
{
	struct img *img;
	struct stat st;
	int fd, r;

	fd = open(argv[3], O_RDONLY);
	if (fd < 0 || fstat(fd, &st) < 0)
		return fail(argv[3], -errno, NULL);
	if (open_image(&img, argv[2], IMG_OPEN_RDWR, argc, argv, 4))
		return 1;
	for (uint64_t off = 0; off < (uint64_t)st.st_size; off += CHUNK) {
		size_t n = (uint64_t)st.st_size - off < CHUNK
				   ? (uint64_t)st.st_size - off
				   : CHUNK;

		if (pread(fd, buf, n, (off_t)off) != (ssize_t)n)
			return fail(argv[3], -errno, NULL);
		if (buf_is_zero(buf, n))
			continue;
		r = img_pwrite(img, buf, n, off);
		if (r < 0)
			return fail_img(img, argv[2], r);
	}
	close(fd);
	r = img_close(img);
	return r < 0 ? fail(argv[2], r, NULL) : 0;
}

static int cmd_check(int argc, char **argv)
{
	struct img_check_result res = { 0 };
	unsigned fix = 0;
	struct img *img;
	int r;

	if (argc > 3 && !strcmp(argv[3], "leaks"))
		fix = IMG_CHECK_FIX_LEAKS;
	if (argc > 3 && !strcmp(argv[3], "all"))
		fix = IMG_CHECK_FIX_LEAKS | IMG_CHECK_FIX_ERRORS;
	if (open_image(&img, argv[2],
		       IMG_OPEN_CHECK | IMG_OPEN_NO_BACKING |
			       (fix ? IMG_OPEN_RDWR : 0),
		       argc, argv, 4))
		return 1;
	r = img_check(img, &res, fix);
	if (r < 0)
		return fail_img(img, argv[2], r);
	for (int i = 0; i < res.nmessages; i++)
		printf("message: %s\n", res.messages[i]);
	printf("corruptions=%llu leaks=%llu fixed_corruptions=%llu "
	       "fixed_leaks=%llu allocated=%llu total=%llu end=%llu\n",
	       (unsigned long long)res.corruptions,
	       (unsigned long long)res.leaks,
	       (unsigned long long)res.corruptions_fixed,
	       (unsigned long long)res.leaks_fixed,
	       (unsigned long long)res.allocated_clusters,
	       (unsigned long long)res.total_clusters,
	       (unsigned long long)res.image_end_offset);
	return img_close(img) < 0;
}

static int cmd_resize(int argc, char **argv)
{
	struct img *img;
	uint64_t size;
	int r;

	if (img_parse_size(argv[3], &size) < 0)
		return fail(argv[3], -EINVAL, "bad size");
	if (open_image(&img, argv[2], IMG_OPEN_RDWR | IMG_OPEN_NO_BACKING, argc,
		       argv, 5))
		return 1;
	r = img_resize(
		img, size,
		argc > 4 && !strcmp(argv[4], "shrink") ? IMG_RESIZE_SHRINK : 0);
	if (r < 0)
		return fail_img(img, argv[2], r);
	return img_close(img) < 0;
}

static int cmd_rebase(int argc, char **argv)
{
	struct img *img, *parent = NULL;
	int r;

	if (open_image(&img, argv[2], IMG_OPEN_RDWR | IMG_OPEN_NO_BACKING, argc,
		       argv, 4))
		return 1;
	if (strcmp(argv[3], "-") &&
	    open_image(&parent, argv[3], IMG_OPEN_RDONLY, argc, argv, 4))
		return 1;
	r = img_set_backing(img, parent ? argv[3] : NULL, NULL, parent);
	if (r < 0)
		return fail_img(img, argv[2], r);
	if (parent)
		img_close(parent);
	return img_close(img) < 0;
}

static int cmd_zero(int argc, char **argv, bool discard)
{
	struct img *img;
	uint64_t off, len;
	int r;

	if (img_parse_size(argv[3], &off) < 0 ||
	    img_parse_size(argv[4], &len) < 0)
		return fail(argv[3], -EINVAL, "bad range");
	if (open_image(&img, argv[2], IMG_OPEN_RDWR, argc, argv, 5))
		return 1;
	if (discard)
		r = img_discard(img, off, len);
	else
		r = img_write_zeroes(img, off, len,
				     argc > 5 && !strcmp(argv[5], "unmap")
					     ? IMG_ZERO_MAY_UNMAP
					     : 0);
	if (r < 0)
		return fail_img(img, argv[2], r);
	return img_close(img) < 0;
}

static long crash_countdown;

static int crash_hook(enum img_io_op op, int fd, uint64_t off, uint64_t len,
		      void *opaque)
{
	(void)op, (void)fd, (void)off, (void)len, (void)opaque;
	if (--crash_countdown == 0)
		_exit(99);
	return 0;
}

static int cmd_crash(int argc, char **argv)
{
	crash_countdown = strtol(argv[4], NULL, 0);
	img_set_io_hook(crash_hook, NULL);
	return cmd_write(argc - 1, argv);
}

static int cmd_map(int argc, char **argv)
{
	struct img_extent ext;
	struct img *img;

	if (open_image(&img, argv[2], IMG_OPEN_RDONLY, argc, argv, 3))
		return 1;
	for (uint64_t off = 0; off < img_size(img); off += ext.length) {
		int r = img_block_status_layer(img, off, img_size(img) - off,
					       &ext);

		if (r < 0)
			return fail_img(img, argv[2], r);
		printf("%llu %llu %s depth=%d\n", (unsigned long long)off,
		       (unsigned long long)ext.length,
		       ext.flags & IMG_EXTENT_ALLOCATED ? "allocated" : "hole",
		       ext.depth);
	}
	return img_close(img) < 0;
}

int main(int argc, char **argv)
{
	uint64_t size;

	if (argc >= 5 && !strcmp(argv[1], "pattern")) {
		if (img_parse_size(argv[3], &size) < 0)
			return fail(argv[3], -EINVAL, "bad size");
		return cmd_pattern(argv[2], size, strtoull(argv[4], NULL, 0));
	}
	if (argc >= 4 && !strcmp(argv[1], "read"))
		return cmd_read(argc, argv);
	if (argc >= 4 && !strcmp(argv[1], "cmp"))
		return cmd_cmp(argc, argv);
	if (argc >= 4 && !strcmp(argv[1], "write"))
		return cmd_write(argc, argv);
	if (argc >= 3 && !strcmp(argv[1], "check"))
		return cmd_check(argc, argv);
	if (argc >= 4 && !strcmp(argv[1], "resize"))
		return cmd_resize(argc, argv);
	if (argc >= 4 && !strcmp(argv[1], "rebase"))
		return cmd_rebase(argc, argv);
	if (argc >= 5 && !strcmp(argv[1], "zero"))
		return cmd_zero(argc, argv, false);
	if (argc >= 5 && !strcmp(argv[1], "discard"))
		return cmd_zero(argc, argv, true);
	if (argc >= 5 && !strcmp(argv[1], "crash"))
		return cmd_crash(argc, argv);
	if (argc >= 3 && !strcmp(argv[1], "map"))
		return cmd_map(argc, argv);
	fprintf(stderr, "usage: see the comment at the top of vhd_io.c\n");
	return 2;
}
