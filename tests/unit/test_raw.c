/* SPDX-License-Identifier: MIT */
/* Unit tests for the raw driver: sparse files, block status, discard,
 * write_zeroes, resize, preallocation and (when usable) a loop device. */
#include "driver.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[64];
static char errbuf[IMG_ERRMSG_MAX];
static char loopdev[64];

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/test_raw.XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	loopdev[0] = '\0';
}

static void teardown(void)
{
	char cmd[160];

	if (loopdev[0]) {
		snprintf(cmd, sizeof(cmd), "losetup -d %s", loopdev);
		cr_expect_eq(system(cmd), 0);
	}
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	cr_expect_eq(system(cmd), 0);
}

TestSuite(raw, .init = setup, .fini = teardown);

static const char *path_in(const char *name)
{
	static char buf[128];

	snprintf(buf, sizeof(buf), "%s/%s", dir, name);
	return buf;
}

/* A sparse raw image of size bytes, opened read-write. */
static struct img *create_open(const char *name, uint64_t size)
{
	struct img_create_options co = { .format = "raw", .size = size };
	struct img_open_options oo = { .format = "raw",
				       .flags = IMG_OPEN_RDWR };
	struct img *img;

	cr_assert_eq(img_create(path_in(name), &co, errbuf, sizeof(errbuf)), 0,
		     "%s", errbuf);
	cr_assert_eq(img_open(&img, path_in(name), &oo, errbuf, sizeof(errbuf)),
		     0, "%s", errbuf);
	return img;
}

static uint64_t allocated(const char *name)
{
	struct stat st;

	cr_assert_eq(stat(path_in(name), &st), 0);
	return (uint64_t)st.st_blocks * 512;
}

/* Does this file system report holes at all? (tmpfs, ext4, xfs, btrfs do) */
static bool fs_has_holes(struct img *img)
{
	struct img_extent e;

	return img_block_status(img, 0, img_size(img), &e) == 0 &&
	       !(e.flags & IMG_EXTENT_DATA);
}

static void fill(struct img *img, uint64_t off, size_t len, int c)
{
	char *buf = malloc(len);

	cr_assert_not_null(buf);
	memset(buf, c, len);
	cr_assert_eq(img_pwrite(img, buf, len, off), 0, "%s", img_errmsg(img));
	free(buf);
}

static void expect_bytes(struct img *img, uint64_t off, size_t len, int c)
{
	unsigned char *buf = malloc(len);

	cr_assert_not_null(buf);
	cr_assert_eq(img_pread(img, buf, len, off), 0);
	for (size_t i = 0; i < len; i++)
		if (buf[i] != (unsigned char)c)
			cr_assert_fail("byte %llu is %u, want %u",
				       (unsigned long long)(off + i), buf[i],
				       (unsigned char)c);
	free(buf);
}

Test(raw, create_is_sparse)
{
	struct img *img = create_open("a.img", 64 << 20);
	struct img_extent e;

	cr_assert_eq(img_size(img), 64 << 20);
	cr_assert_lt(allocated("a.img"), 64 * 1024);
	cr_assert_eq(img_block_status(img, 0, 64 << 20, &e), 0);
	cr_assert_eq(e.start, 0);
	cr_assert_gt(e.length, 0);
	if (!fs_has_holes(img)) {
		img_close(img);
		cr_skip_test("file system does not report holes");
	}
	cr_assert_eq(e.length, 64 << 20);
	cr_assert_eq(e.flags, IMG_EXTENT_ZERO, "flags %#x", e.flags);
	cr_assert_eq(e.depth, -1);
	cr_assert_eq(e.file_offset, -1);
	expect_bytes(img, 0, 1 << 20, 0);
	img_close(img);
}

Test(raw, block_status_data_and_holes)
{
	struct img *img = create_open("a.img", 16 << 20);
	struct img_extent e;

	if (!fs_has_holes(img)) {
		img_close(img);
		cr_skip_test("file system does not report holes");
	}
	fill(img, 4 << 20, 1 << 20, 0x5a);
	cr_assert_eq(img_block_status(img, 0, 16 << 20, &e), 0);
	cr_assert_eq(e.length, 4 << 20);
	cr_assert_eq(e.flags & IMG_EXTENT_DATA, 0);
	cr_assert_eq(img_block_status(img, 4 << 20, 12 << 20, &e), 0);
	cr_assert_eq(e.start, 4 << 20);
	cr_assert_eq(e.length, 1 << 20);
	cr_assert_eq(e.flags, IMG_EXTENT_DATA | IMG_EXTENT_ALLOCATED);
	cr_assert_eq(e.depth, 0);
	cr_assert_eq(e.file_offset, 4 << 20);
	/* The length asked for bounds the answer. */
	cr_assert_eq(img_block_status(img, 4 << 20, 4096, &e), 0);
	cr_assert_eq(e.length, 4096);
	cr_assert_eq(img_block_status_layer(img, 5 << 20, 11 << 20, &e), 0);
	cr_assert_eq(e.length, 11 << 20);
	cr_assert_eq(e.depth, -1);
	/* Past the end is an error, not an empty extent. */
	cr_assert_eq(img_block_status(img, 16 << 20, 1, &e), -EINVAL);
	img_close(img);
}

Test(raw, discard_punches_holes)
{
	struct img *img = create_open("a.img", 8 << 20);
	uint64_t before;
	struct img_extent e;

	fill(img, 0, 8 << 20, 0x11);
	cr_assert_eq(img_flush(img), 0);
	before = allocated("a.img");
	cr_assert_geq(before, 8 << 20);
	cr_assert_eq(img_discard(img, 1 << 20, 2 << 20), 0);
	cr_assert_eq(img_flush(img), 0);
	/* give or take an extent-tree block */
	cr_assert_leq(allocated("a.img"), before - (2 << 20) + 64 * 1024);
	expect_bytes(img, 1 << 20, 2 << 20, 0);
	expect_bytes(img, 0, 1 << 20, 0x11);
	expect_bytes(img, 3 << 20, 5 << 20, 0x11);
	cr_assert_eq(img_block_status(img, 1 << 20, 2 << 20, &e), 0);
	cr_assert_eq(e.flags & IMG_EXTENT_DATA, 0);
	cr_assert(e.flags & IMG_EXTENT_ZERO);
	img_close(img);
}

Test(raw, write_zeroes)
{
	struct img *img = create_open("a.img", 8 << 20);
	uint64_t before;

	struct img_extent e;
	bool holes = fs_has_holes(img);

	fill(img, 0, 8 << 20, 0x22);
	/* Measure allocations only after writeback: delayed allocation
	 * and extent-tree blocks must not move the numbers. */
	cr_assert_eq(img_flush(img), 0);
	before = allocated("a.img");
	/* Without MAY_UNMAP the space stays allocated. */
	cr_assert_eq(img_write_zeroes(img, 1 << 20, 1 << 20, 0), 0);
	expect_bytes(img, 1 << 20, 1 << 20, 0);
	expect_bytes(img, 0, 1 << 20, 0x22);
	cr_assert_eq(img_flush(img), 0);
	cr_assert_geq(allocated("a.img"), before - 64 * 1024);
	/* With it the range becomes a hole (checked with SEEK_HOLE, which
	 * does not depend on metadata accounting). */
	cr_assert_eq(
		img_write_zeroes(img, 4 << 20, 2 << 20, IMG_ZERO_MAY_UNMAP), 0);
	expect_bytes(img, 4 << 20, 2 << 20, 0);
	expect_bytes(img, 6 << 20, 2 << 20, 0x22);
	if (holes) {
		cr_assert_eq(img_block_status(img, 4 << 20, 2 << 20, &e), 0);
		cr_assert_eq(e.flags & IMG_EXTENT_DATA, 0, "flags %#x",
			     e.flags);
		cr_assert_eq(e.length, 2 << 20);
		cr_assert_eq(img_flush(img), 0);
		/* ... and gives the space back, give or take a metadata
		 * block. */
		cr_assert_leq(allocated("a.img"),
			      before - (2 << 20) + 64 * 1024);
	}
	/* Unaligned edges. */
	cr_assert_eq(img_write_zeroes(img, 100, 1000, 0), 0);
	expect_bytes(img, 0, 100, 0x22);
	expect_bytes(img, 100, 1000, 0);
	expect_bytes(img, 1100, 1000, 0x22);
	img_close(img);
}

Test(raw, resize_grow_and_shrink)
{
	struct img *img = create_open("a.img", 1 << 20);
	struct stat st;

	fill(img, 0, 1 << 20, 0x33);
	cr_assert_eq(img_resize(img, 3 << 20, 0), 0);
	cr_assert_eq(img_size(img), 3 << 20);
	cr_assert_eq(stat(path_in("a.img"), &st), 0);
	cr_assert_eq(st.st_size, 3 << 20);
	expect_bytes(img, 1 << 20, 2 << 20, 0);
	/* Shrinking needs the flag. */
	cr_assert_eq(img_resize(img, 512 << 10, 0), -EINVAL);
	cr_assert(strstr(img_errmsg(img), "shrink"), "%s", img_errmsg(img));
	cr_assert_eq(img_size(img), 3 << 20);
	cr_assert_eq(img_resize(img, 512 << 10, IMG_RESIZE_SHRINK), 0);
	cr_assert_eq(img_size(img), 512 << 10);
	cr_assert_eq(stat(path_in("a.img"), &st), 0);
	cr_assert_eq(st.st_size, 512 << 10);
	expect_bytes(img, 0, 512 << 10, 0x33);
	img_close(img);
}

Test(raw, preallocation_full)
{
	struct img_create_options co = { .format = "raw",
					 .size = 4 << 20,
					 .options = "preallocation=full" };
	struct stat st;

	cr_assert_eq(img_create(path_in("p.img"), &co, errbuf, sizeof(errbuf)),
		     0, "%s", errbuf);
	cr_assert_eq(stat(path_in("p.img"), &st), 0);
	cr_assert_eq(st.st_size, 4 << 20);
	cr_assert_geq(allocated("p.img"), 4 << 20);
}

Test(raw, create_refuses_backing_and_subformat)
{
	struct img_create_options co = { .format = "raw",
					 .size = 1 << 20,
					 .subformat = "fixed" };

	cr_assert_eq(img_create(path_in("a.img"), &co, errbuf, sizeof(errbuf)),
		     -EINVAL);
	cr_assert(strstr(errbuf, "subformat"), "%s", errbuf);
}

Test(raw, vectored_io_straight_through)
{
	struct img *img = create_open("a.img", 1 << 20);
	static char bufs[64][4096];
	struct iovec iov[64];

	for (int i = 0; i < 64; i++) {
		memset(bufs[i], i, sizeof(bufs[i]));
		iov[i].iov_base = bufs[i];
		iov[i].iov_len = sizeof(bufs[i]) - (i % 2); /* odd sizes */
	}
	cr_assert_eq(img_pwritev(img, iov, 64, 12345), 0);
	memset(bufs, 0xff, sizeof(bufs));
	cr_assert_eq(img_preadv(img, iov, 64, 12345), 0);
	for (int i = 0; i < 64; i++)
		for (size_t j = 0; j < iov[i].iov_len; j++)
			cr_assert_eq(bufs[i][j], i);
	img_close(img);
}

Test(raw, info_lists_sizes)
{
	struct img *img = create_open("a.img", 2 << 20);
	struct img_info *info = NULL;

	fill(img, 0, 1 << 20, 1);
	img_info_free(info);
	cr_assert_eq(img_get_info(img, &info), 0);
	cr_assert_str_eq(info->format, "raw");
	cr_assert_str_eq(info->filename, path_in("a.img"));
	cr_assert_eq(info->virtual_size, 2 << 20);
	cr_assert_geq(info->actual_size, 1 << 20);
	cr_assert_lt(info->actual_size, 2 << 20);
	cr_assert_not(info->read_only);
	cr_assert_eq(info->backing_filename[0], '\0');
	img_info_free(info);
	img_close(img);
}

Test(raw, block_device)
{
	struct img_open_options oo = { .format = "raw",
				       .flags = IMG_OPEN_RDWR };
	struct img *img;
	FILE *p;
	char cmd[256];
	int fd;

	fd = open(path_in("backing"), O_CREAT | O_RDWR, 0644);
	cr_assert_geq(fd, 0);
	cr_assert_eq(ftruncate(fd, 8 << 20), 0);
	close(fd);
	snprintf(cmd, sizeof(cmd), "losetup -f --show '%s' 2>/dev/null",
		 path_in("backing"));
	p = access("/dev/loop-control", W_OK) == 0 ? popen(cmd, "r") : NULL;
	if (!p || !fgets(loopdev, sizeof(loopdev), p)) {
		if (p)
			pclose(p);
		loopdev[0] = '\0';
		cr_skip_test("no usable loop device");
	}
	pclose(p);
	loopdev[strcspn(loopdev, "\n")] = '\0';
	cr_assert_eq(img_open(&img, loopdev, &oo, errbuf, sizeof(errbuf)), 0,
		     "%s", errbuf);
	cr_assert_eq(img_size(img), 8 << 20, "size from BLKGETSIZE64");
	fill(img, 4096, 8192, 0x44);
	cr_assert_eq(img_flush(img), 0);
	expect_bytes(img, 4096, 8192, 0x44);
	cr_assert_eq(img_resize(img, 16 << 20, 0), -ENOTSUP);
	img_close(img);
}

Test(raw, direct_io_coherent_with_cached_io)
{
	struct img_create_options co = { .format = "raw", .size = 1 << 20 };
	struct img_open_options oo = { .flags = IMG_OPEN_RDWR |
						IMG_OPEN_DIRECT };
	unsigned char *buf = aligned_alloc(4096, 65536);
	struct img *img;

	cr_assert_not_null(buf);
	cr_assert_eq(img_create(path_in("d.img"), &co, errbuf, sizeof(errbuf)),
		     0);
	cr_assert_eq(img_open(&img, path_in("d.img"), &oo, errbuf,
			      sizeof(errbuf)),
		     0, "%s", errbuf);
	/* aligned (direct path), then unaligned over it (cached path) */
	memset(buf, 0x61, 65536);
	cr_assert_eq(img_pwrite(img, buf, 65536, 65536), 0);
	memset(buf, 0x62, 100);
	cr_assert_eq(img_pwrite(img, buf, 100, 65536 + 1000), 0);
	/* an aligned read sees both */
	memset(buf, 0, 65536);
	cr_assert_eq(img_pread(img, buf, 65536, 65536), 0);
	for (int i = 0; i < 65536; i++)
		cr_assert_eq(buf[i], i >= 1000 && i < 1100 ? 0x62 : 0x61,
			     "byte %d", i);
	cr_assert_eq(img_close(img), 0);
	free(buf);
}
