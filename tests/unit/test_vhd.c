/* SPDX-License-Identifier: MIT */
/* Unit tests of the VHD driver: the pure codec (checksum, geometry,
 * bitmaps, UTF-16, locator paths) and, through libimg, the BAT, growth,
 * check/repair and the rejection of bad input. */
#include "formats/vhd/vhd_ondisk.h"
#include "img.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- checksum and footer codec ------------------------------------------*/

static struct vhd_footer sample_footer(void)
{
	struct vhd_footer f = {
		.features = VHD_FEATURE_RESERVED,
		.version = VHD_VERSION,
		.data_offset = 512,
		.timestamp = 0x1a2b3c4d,
		.creator_app = { 't', 'e', 's', 't' },
		.creator_version = 0x00010002,
		.creator_host_os = VHD_OS_WINDOWS,
		.original_size = 64ull << 20,
		.current_size = 64ull << 20,
		.cylinders = 963,
		.heads = 8,
		.sectors_per_track = 17,
		.disk_type = VHD_TYPE_DYNAMIC,
		.uuid = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
			  16 },
	};
	return f;
}

Test(vhd_codec, checksum_is_ones_complement_of_byte_sum)
{
	uint8_t buf[16] = { 1, 2, 3, 0xaa, 0xbb, 0xcc, 0xdd, 4 };

	/* bytes 3..6 are the skipped checksum field */
	cr_assert_eq(vhd_checksum(buf, 8, 3), ~(uint32_t)(1 + 2 + 3 + 4));
	cr_assert_eq(vhd_checksum(buf, 0, 0), 0xffffffffu);
}

Test(vhd_codec, footer_round_trip_and_checksum)
{
	struct vhd_footer f = sample_footer(), g;
	uint8_t raw[512];
	bool ok;

	vhd_footer_encode(&f, raw);
	cr_assert(!memcmp(raw, "conectix", 8));
	/* big-endian on disk */
	cr_assert_eq(raw[48], 0);
	cr_assert_eq(raw[52], 0x04);
	cr_assert_eq(raw[56], 963 >> 8);
	cr_assert_eq(raw[57], 963 & 0xff);
	cr_assert(vhd_footer_decode(raw, &g, &ok));
	cr_assert(ok);
	cr_assert_eq(g.current_size, 64ull << 20);
	cr_assert_eq(g.cylinders, 963);
	cr_assert_eq(g.heads, 8);
	cr_assert_eq(g.disk_type, VHD_TYPE_DYNAMIC);
	cr_assert_eq(g.timestamp, 0x1a2b3c4d);
	cr_assert(!memcmp(g.uuid, f.uuid, 16));
	cr_assert_eq(g.checksum, f.checksum);

	raw[100] ^= 1;
	cr_assert(vhd_footer_decode(raw, &g, &ok));
	cr_assert(!ok, "a flipped bit must break the checksum");
	memcpy(raw, "conectiy", 8);
	cr_assert(!vhd_footer_decode(raw, &g, &ok), "wrong cookie");
}

Test(vhd_codec, header_round_trip)
{
	struct vhd_header h = { 0 }, g;
	uint8_t raw[1024];
	bool ok;

	h.data_offset = VHD_NO_OFFSET;
	h.table_offset = 1536;
	h.header_version = VHD_VERSION;
	h.max_table_entries = 1234;
	h.block_size = VHD_DEFAULT_BLOCK_SIZE;
	h.parent_timestamp = 77;
	h.locators[2].platform_code = VHD_PLATFORM_W2RU;
	h.locators[2].data_length = 30;
	h.locators[2].data_space = 512;
	h.locators[2].data_offset = 4096;
	vhd_header_encode(&h, raw);
	cr_assert(!memcmp(raw, "cxsparse", 8));
	cr_assert(vhd_header_decode(raw, &g, &ok));
	cr_assert(ok);
	cr_assert_eq(g.max_table_entries, 1234);
	cr_assert_eq(g.table_offset, 1536);
	cr_assert_eq(g.locators[2].platform_code, VHD_PLATFORM_W2RU);
	cr_assert_eq(g.locators[2].data_offset, 4096);
	/* The locator table starts at byte 576 (spec). */
	cr_assert(!memcmp(raw + 576 + 2 * 24, "W2ru", 4));
	raw[600] ^= 0x80;
	cr_assert(vhd_header_decode(raw, &g, &ok));
	cr_assert(!ok);
}

/* ---- geometry (spec appendix "CHS Calculation") ---------------------------*/

struct chs_case {
	uint64_t bytes;
	unsigned c, h, s;
};

Test(vhd_geometry, spec_algorithm_examples)
{
	/* Rounding down, as the spec's algorithm does; the first three
	 * are real Windows images' footers (tests/fixtures/vhd). */
	static const struct chs_case cases[] = {
		{ 10485760, 301, 4, 17 }, /* Windows 10 dynamic.vhd */
		{ 4194304, 120, 4, 17 },  /* Windows 10 fat-differential.vhd */
		{ 104448, 3, 4, 17 },	  /* dfvfs image.vhd */
		{ 64ull << 20, 963, 8, 17 },
		{ 1ull << 30, 2080, 16, 63 },
		{ 2ull << 30, 4161, 16, 63 },
		{ 40ull << 30, 20560, 16, 255 },
		{ 127ull << 30, 65278, 16, 255 }, /* as Hyper-V wrote it */
		{ 200ull << 30, 65535, 16, 255 }, /* clamped */
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct vhd_geometry g = vhd_geometry_for(cases[i].bytes / 512);

		cr_expect_eq(g.cylinders, cases[i].c, "%llu: C %u",
			     (unsigned long long)cases[i].bytes, g.cylinders);
		cr_expect_eq(g.heads, cases[i].h, "%llu: H %u",
			     (unsigned long long)cases[i].bytes, g.heads);
		cr_expect_eq(g.sectors_per_track, cases[i].s, "%llu: S %u",
			     (unsigned long long)cases[i].bytes,
			     g.sectors_per_track);
	}
}

Test(vhd_geometry, round_up_matches_qemu_img)
{
	/* qemu-img create -f vpc (no force_size) virtual sizes, and the
	 * geometry it stores. */
	static const struct chs_case cases[] = {
		{ 1079296, 31, 4, 17 },	     /* 1M */
		{ 10514432, 302, 4, 17 },    /* 10M */
		{ 67125248, 964, 8, 17 },    /* 64M */
		{ 133171200, 1020, 15, 17 }, /* 127M */
		{ 314818560, 610, 16, 63 },  /* 300M */
		{ 1073995776, 2081, 16, 63 },
		{ 2147991552, 4162, 16, 63 },
		{ 42951106560ull, 20561, 16, 255 },
		{ 136365219840ull, 65279, 16, 255 },
	};
	static const uint64_t asked[] = { 1ull << 20,	10ull << 20,
					  64ull << 20,	127ull << 20,
					  300ull << 20, 1ull << 30,
					  2ull << 30,	40ull << 30,
					  127ull << 30 };

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t sectors = vhd_geometry_round_up(asked[i] / 512);
		struct vhd_geometry g = vhd_geometry_for(sectors);

		cr_expect_eq(sectors * 512, cases[i].bytes, "%llu -> %llu",
			     (unsigned long long)asked[i],
			     (unsigned long long)sectors * 512);
		cr_expect_eq(g.cylinders, cases[i].c);
		cr_expect_eq(g.heads, cases[i].h);
		cr_expect_eq(g.sectors_per_track, cases[i].s);
		cr_expect_eq(vhd_geometry_sectors(g), sectors);
	}
	/* Past the largest geometry the size stays as asked. */
	cr_assert_eq(vhd_geometry_round_up(419430400), 419430400);
}

/* ---- sector bitmaps -------------------------------------------------------*/

Test(vhd_bitmap, msb_first_set_test_run)
{
	uint8_t bm[512] = { 0 };
	bool set;

	vhd_bitmap_set(bm, 0, 1);
	cr_assert_eq(bm[0], 0x80, "sector 0 is bit 7 of byte 0");
	vhd_bitmap_set(bm, 5, 20);
	cr_assert(vhd_bitmap_test(bm, 5) && vhd_bitmap_test(bm, 24));
	cr_assert(!vhd_bitmap_test(bm, 25) && !vhd_bitmap_test(bm, 4));
	cr_assert_eq(bm[1], 0xff);
	cr_assert_eq(vhd_bitmap_run(bm, 5, 4096 - 5, &set), 20);
	cr_assert(set);
	cr_assert_eq(vhd_bitmap_run(bm, 25, 4096 - 25, &set), 4096 - 25);
	cr_assert(!set);
	cr_assert_eq(vhd_bitmap_run(bm, 1, 3, &set), 3, "max respected");
	cr_assert(vhd_bitmap_all_set(bm, 5, 20));
	cr_assert(!vhd_bitmap_all_set(bm, 4, 21));
	vhd_bitmap_set(bm, 0, 4096);
	cr_assert(vhd_bitmap_all_set(bm, 0, 4096));
	cr_assert_eq(bm[511], 0xff);
}

/* ---- names and locator paths ----------------------------------------------*/

Test(vhd_names, utf16_round_trips)
{
	const char *text =
		"dir/p\xc3\xa4rent-\xf0\x9f\x92\xbe.vhd"; /* ä, U+1F4BE */
	uint8_t u[256];
	char back[256];
	int n;

	n = vhd_utf8_to_utf16(text, u, sizeof(u), false);
	cr_assert_gt(n, 0);
	cr_assert_eq(u[0], 'd');
	cr_assert_eq(u[1], 0, "little-endian");
	cr_assert_eq(vhd_utf16_to_utf8(u, (size_t)n, false, back, sizeof(back)),
		     0);
	cr_assert_str_eq(back, text);

	n = vhd_utf8_to_utf16(text, u, sizeof(u), true);
	cr_assert_eq(u[0], 0, "big-endian");
	cr_assert_eq(u[1], 'd');
	/* surrogate pair for U+1F4BE: D83D DCBE */
	cr_assert_eq(vhd_utf16_to_utf8(u, (size_t)n, true, back, sizeof(back)),
		     0);
	cr_assert_str_eq(back, text);

	cr_assert_eq(vhd_utf8_to_utf16("\xff", u, sizeof(u), true), -EINVAL);
	cr_assert_eq(vhd_utf8_to_utf16("abcdef", u, 4, true), -ENAMETOOLONG);
	uint8_t lone[2] = { 0xdc, 0x00 };
	cr_assert_eq(vhd_utf16_to_utf8(lone, 2, true, back, sizeof(back)),
		     -EINVAL);
}

Test(vhd_names, windows_paths_and_urls)
{
	char out[256];

	cr_assert(vhd_windows_path_to_host(".\\fat-parent.vhd", out,
					   sizeof(out)));
	cr_assert_str_eq(out, "fat-parent.vhd");
	cr_assert(
		vhd_windows_path_to_host("..\\base\\p.vhd", out, sizeof(out)));
	cr_assert_str_eq(out, "../base/p.vhd");
	cr_assert(!vhd_windows_path_to_host(
		"C:\\Projects\\dfvfs\\test_data\\fat-parent.vhd", out,
		sizeof(out)));
	cr_assert_str_eq(out, "fat-parent.vhd", "drive paths keep the name");
	cr_assert(!vhd_windows_path_to_host("\\\\?\\D:\\vm\\x.vhd", out,
					    sizeof(out)));
	cr_assert_str_eq(out, "x.vhd");
	cr_assert(vhd_windows_path_to_host("\\srv\\img\\a.vhd", out,
					   sizeof(out)));
	cr_assert_str_eq(out, "/srv/img/a.vhd");

	cr_assert_eq(vhd_url_to_path("file:///tmp/a%20b.vhd", out, sizeof(out)),
		     0);
	cr_assert_str_eq(out, "/tmp/a b.vhd");
	cr_assert_eq(
		vhd_url_to_path("file://localhost/x.vhd", out, sizeof(out)), 0);
	cr_assert_str_eq(out, "/x.vhd");
	cr_assert_eq(vhd_url_to_path("file:///a%zz", out, sizeof(out)),
		     -EINVAL);
	cr_assert_eq(vhd_path_to_url("/tmp/a b%.vhd", out, sizeof(out)), 0);
	cr_assert_str_eq(out, "file:///tmp/a%20b%25.vhd");
	vhd_host_path_to_windows("../a/b.vhd", out, sizeof(out));
	cr_assert_str_eq(out, "..\\a\\b.vhd");
	cr_assert_eq(vhd_timestamp_from_unix(946684800 + 5), 5);
	cr_assert_eq(vhd_timestamp_from_unix(5), 0);
}

/* ---- through libimg: BAT, growth, check, bad input ------------------------*/

static char dir[64];

static void make_dir(void)
{
	snprintf(dir, sizeof(dir), "/tmp/test_vhd.XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
}

static void remove_dir(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	cr_assert_eq(system(cmd), 0);
}

static const char *path_in_dir(const char *name)
{
	static char p[4][128];
	static int i;

	i = (i + 1) % 4;
	snprintf(p[i], sizeof(p[i]), "%s/%s", dir, name);
	return p[i];
}

static void create(const char *name, uint64_t size, const char *options)
{
	struct img_create_options o = { .format = "vhd",
					.size = size,
					.options = options };
	char err[IMG_ERRMSG_MAX];

	cr_assert_eq(img_create(path_in_dir(name), &o, err, sizeof(err)), 0,
		     "%s", err);
}

static int open_image(struct img **img, const char *name, unsigned flags,
		      char *err)
{
	struct img_open_options o = { .flags = flags };

	return img_open(img, path_in_dir(name), &o, err, IMG_ERRMSG_MAX);
}

static uint32_t file_be32(const char *name, uint64_t off)
{
	uint8_t b[4];
	int fd = open(path_in_dir(name), O_RDONLY);

	cr_assert_geq(fd, 0);
	cr_assert_eq(pread(fd, b, 4, (off_t)off), 4);
	close(fd);
	return (uint32_t)b[0] << 24 | b[1] << 16 | b[2] << 8 | b[3];
}

static void file_poke(const char *name, uint64_t off, const void *data,
		      size_t len)
{
	int fd = open(path_in_dir(name), O_WRONLY);

	cr_assert_geq(fd, 0);
	cr_assert_eq(pwrite(fd, data, len, (off_t)off), (ssize_t)len);
	close(fd);
}

/* The same bytes into both footer copies (offset 0 and the end). */
static void footers_poke(const char *name, uint64_t off, const void *data,
			 size_t len)
{
	int fd = open(path_in_dir(name), O_WRONLY);
	off_t end = lseek(fd, 0, SEEK_END);

	cr_assert_geq(fd, 0);
	cr_assert_eq(pwrite(fd, data, len, (off_t)off), (ssize_t)len);
	cr_assert_eq(pwrite(fd, data, len, end - 512 + (off_t)off),
		     (ssize_t)len);
	close(fd);
}

TestSuite(vhd_image, .init = make_dir, .fini = remove_dir);

Test(vhd_image, bat_entries_reach_disk_at_flush)
{
	char err[IMG_ERRMSG_MAX], buf[4096];
	struct img *img;

	create("a.vhd", 10 << 20, NULL);
	/* footer copy 0, header 512, BAT 1536, first block after it */
	cr_assert_eq(file_be32("a.vhd", 512 + 16 + 4), 1536);
	cr_assert_eq(file_be32("a.vhd", 512 + 28), 5, "max table entries");
	cr_assert_eq(open_image(&img, "a.vhd", IMG_OPEN_RDWR, err), 0, "%s",
		     err);
	memset(buf, 0x5a, sizeof(buf));
	cr_assert_eq(img_pwrite(img, buf, sizeof(buf), 3 * (2 << 20) + 512), 0);
	/* Before the flush the on-disk entry still says unused. */
	cr_assert_eq(file_be32("a.vhd", 1536 + 12), 0xffffffffu);
	cr_assert_eq(img_flush(img), 0);
	cr_assert_eq(file_be32("a.vhd", 1536 + 12), 2048 / 512);
	cr_assert_eq(file_be32("a.vhd", 1536 + 0), 0xffffffffu);
	/* zeros over an unallocated block allocate nothing */
	memset(buf, 0, sizeof(buf));
	cr_assert_eq(img_pwrite(img, buf, sizeof(buf), 0), 0);
	cr_assert_eq(img_close(img), 0);
	cr_assert_eq(file_be32("a.vhd", 1536), 0xffffffffu);

	cr_assert_eq(open_image(&img, "a.vhd", IMG_OPEN_RDONLY, err), 0);
	cr_assert_eq(img_pread(img, buf, sizeof(buf), 3 * (2 << 20) + 512), 0);
	cr_assert_eq(buf[0], 0x5a);
	cr_assert_eq(buf[4095], 0x5a);
	cr_assert_eq(img_pread(img, buf, 512, 3 * (2 << 20)), 0);
	cr_assert_eq(buf[0], 0);
	img_close(img);
}

Test(vhd_image, growth_relocates_the_bat)
{
	char err[IMG_ERRMSG_MAX], buf[512];
	struct img_check_result res = { 0 };
	struct img *img;

	create("g.vhd", 10 << 20, NULL);
	cr_assert_eq(open_image(&img, "g.vhd", IMG_OPEN_RDWR, err), 0);
	memset(buf, 0x33, sizeof(buf));
	cr_assert_eq(img_pwrite(img, buf, sizeof(buf), 9 << 20), 0);
	/* 10 MiB -> 200 MiB: 100 entries fit in the BAT's 512 bytes */
	cr_assert_eq(img_resize(img, 200 << 20, 0), 0);
	cr_assert_eq(img_size(img), 200 << 20);
	/* 200 MiB -> 1 GiB: 512 entries need a new BAT */
	cr_assert_eq(img_resize(img, 1 << 30, 0), 0);
	cr_assert_eq(img_resize(img, 1 << 20, 0), -EINVAL,
		     "shrinking needs the flag");
	cr_assert_eq(img_pwrite(img, buf, sizeof(buf), (1 << 30) - 512), 0);
	cr_assert_eq(img_close(img), 0);
	cr_assert_neq(file_be32("g.vhd", 512 + 16 + 4), 1536, "BAT moved");
	cr_assert_eq(file_be32("g.vhd", 512 + 28), 512);

	cr_assert_eq(open_image(&img, "g.vhd", IMG_OPEN_CHECK, err), 0);
	cr_assert_eq(img_size(img), 1 << 30);
	cr_assert_eq(img_pread(img, buf, 512, 9 << 20), 0);
	cr_assert_eq(buf[0], 0x33);
	cr_assert_eq(img_pread(img, buf, 512, (1 << 30) - 512), 0);
	cr_assert_eq(buf[511], 0x33);
	cr_assert_eq(img_check(img, &res, 0), 0);
	cr_assert_eq(res.corruptions, 0);
	cr_assert_eq(res.leaks, 0, "%s", res.messages[0]);
	cr_assert_eq(res.allocated_clusters, 2);
	img_close(img);
}

Test(vhd_image, check_finds_and_repairs)
{
	char err[IMG_ERRMSG_MAX], buf[512];
	struct img_check_result res = { 0 };
	uint8_t bad_entry[4] = { 0x00, 0x10, 0x00,
				 0x00 }; /* 512 MiB: past EOF */
	struct img *img;

	create("c.vhd", 10 << 20, NULL);
	cr_assert_eq(open_image(&img, "c.vhd", IMG_OPEN_RDWR, err), 0);
	memset(buf, 0x77, sizeof(buf));
	cr_assert_eq(img_pwrite(img, buf, sizeof(buf), 0), 0);
	cr_assert_eq(img_close(img), 0);
	file_poke("c.vhd", 1536 + 4, bad_entry, 4);
	file_poke("c.vhd", 20, "junk", 4); /* the footer copy */

	/* Outside check mode the bad entry refuses the open. */
	cr_assert_eq(open_image(&img, "c.vhd", IMG_OPEN_RDONLY, err), -EINVAL);
	cr_assert(strstr(err, "BAT entry 1"), "%s", err);

	cr_assert_eq(open_image(&img, "c.vhd", IMG_OPEN_CHECK, err), 0, "%s",
		     err);
	cr_assert_eq(img_check(img, &res, 0), 0);
	cr_assert_eq(res.corruptions, 2, "%s / %s", res.messages[0],
		     res.messages[1]);
	img_close(img);

	memset(&res, 0, sizeof(res));
	cr_assert_eq(open_image(&img, "c.vhd", IMG_OPEN_CHECK | IMG_OPEN_RDWR,
				err),
		     0);
	cr_assert_eq(img_check(img, &res,
			       IMG_CHECK_FIX_ERRORS | IMG_CHECK_FIX_LEAKS),
		     0);
	cr_assert_eq(res.corruptions_fixed, 2);
	img_close(img);

	memset(&res, 0, sizeof(res));
	cr_assert_eq(open_image(&img, "c.vhd", IMG_OPEN_CHECK, err), 0);
	cr_assert_eq(img_check(img, &res, 0), 0);
	cr_assert_eq(res.corruptions + res.leaks, 0, "%s", res.messages[0]);
	cr_assert_eq(img_pread(img, buf, 512, 0), 0);
	cr_assert_eq(buf[0], 0x77, "the good block survived");
	img_close(img);
}

Test(vhd_image, bad_input_is_refused)
{
	char err[IMG_ERRMSG_MAX];
	struct img *img;
	uint8_t byte = 0x42;
	uint8_t version[4] = { 0, 2, 0, 0 };

	create("b.vhd", 10 << 20, NULL);
	/* bad checksum in both copies: refused, forced open is read-only */
	file_poke("b.vhd", 100, &byte, 1);
	{
		int fd = open(path_in_dir("b.vhd"), O_WRONLY);
		off_t end = lseek(fd, 0, SEEK_END);

		cr_assert_eq(pwrite(fd, &byte, 1, end - 412), 1);
		close(fd);
	}
	cr_assert_eq(open_image(&img, "b.vhd", IMG_OPEN_RDWR, err), -EINVAL);
	cr_assert(strstr(err, "checksum"), "%s", err);
	cr_assert_eq(open_image(&img, "b.vhd", IMG_OPEN_RDWR | IMG_OPEN_FORCE,
				err),
		     0, "%s", err);
	cr_assert(!img_is_writable(img));
	img_close(img);

	/* wrong cookie everywhere */
	create("b.vhd", 10 << 20, NULL);
	file_poke("b.vhd", 0, "notavhd!", 8);
	{
		struct img_open_options o = { .format = "vhd" };
		uint8_t tail[8] = "notavhd!";
		int fd = open(path_in_dir("b.vhd"), O_WRONLY);
		off_t end = lseek(fd, 0, SEEK_END);

		cr_assert_eq(pwrite(fd, tail, 8, end - 512), 8);
		close(fd);
		cr_assert_eq(img_open(&img, path_in_dir("b.vhd"), &o, err,
				      sizeof(err)),
			     -EINVAL);
		cr_assert(strstr(err, "conectix"), "%s", err);
	}

	/* truncated: the BAT is cut */
	create("t.vhd", 10 << 20, NULL);
	cr_assert_eq(truncate(path_in_dir("t.vhd"), 1540), 0);
	cr_assert_eq(open_image(&img, "t.vhd", IMG_OPEN_RDONLY, err), -EINVAL);
	cr_assert(strstr(err, "past the end"), "%s", err);

	/* too small for any footer */
	cr_assert_eq(truncate(path_in_dir("t.vhd"), 100), 0);
	{
		struct img_open_options o = { .format = "vhd" };

		cr_assert_eq(img_open(&img, path_in_dir("t.vhd"), &o, err,
				      sizeof(err)),
			     -EINVAL);
	}

	/* unsupported version (checksum kept valid by the forced path is
	 * not needed: check mode tolerates the checksum, not the version) */
	create("v.vhd", 10 << 20, NULL);
	footers_poke("v.vhd", 12, version, 4);
	cr_assert_lt(open_image(&img, "v.vhd", IMG_OPEN_CHECK, err), 0);
	cr_assert(strstr(err, "version"), "%s", err);

	/* block size that is not a multiple of 512, and a fixed image whose
	 * data was cut */
	create("k.vhd", 10 << 20, NULL);
	uint8_t bs[4] = { 0, 0, 0x01, 0x01 };
	file_poke("k.vhd", 512 + 32, bs, 4);
	cr_assert_lt(open_image(&img, "k.vhd", IMG_OPEN_CHECK, err), 0);
	cr_assert(strstr(err, "block size"), "%s", err);

	create("f.vhd", 10 << 20, "subformat=fixed");
	{
		uint8_t foot[512];
		int fd = open(path_in_dir("f.vhd"), O_RDWR);

		cr_assert_eq(pread(fd, foot, 512, 10 << 20), 512);
		cr_assert_eq(ftruncate(fd, 5 << 20), 0);
		cr_assert_eq(pwrite(fd, foot, 512, 5 << 20), 512);
		close(fd);
	}
	cr_assert_eq(open_image(&img, "f.vhd", IMG_OPEN_RDONLY, err), -EINVAL);
	cr_assert(strstr(err, "truncated"), "%s", err);
}

Test(vhd_image, create_options)
{
	char err[IMG_ERRMSG_MAX];
	struct img_create_options o = { .format = "vpc", .size = 300 << 20 };
	struct img *img;

	/* exact size by default, CHS-rounded with force_size=off */
	create("e.vhd", (300 << 20) + 1536, NULL);
	cr_assert_eq(open_image(&img, "e.vhd", IMG_OPEN_RDONLY, err), 0);
	cr_assert_eq(img_size(img), (300 << 20) + 1536);
	img_close(img);
	create("r.vhd", 300 << 20, "force_size=off");
	cr_assert_eq(open_image(&img, "r.vhd", IMG_OPEN_RDONLY, err), 0);
	cr_assert_eq(img_size(img), 314818560);
	img_close(img);
	/* the qemu name works, and bad options are refused */
	o.options = "force_size=maybe";
	cr_assert_lt(img_create(path_in_dir("x.vhd"), &o, err, sizeof(err)), 0);
	o.options = "subformat=sparse";
	cr_assert_lt(img_create(path_in_dir("x.vhd"), &o, err, sizeof(err)), 0);
	o.options = "block_size=3000";
	cr_assert_lt(img_create(path_in_dir("x.vhd"), &o, err, sizeof(err)), 0);
	o.options = "block_size=512K";
	cr_assert_eq(img_create(path_in_dir("x.vhd"), &o, err, sizeof(err)), 0,
		     "%s", err);
	cr_assert_eq(file_be32("x.vhd", 512 + 32), 512 * 1024);
	cr_assert_eq(file_be32("x.vhd", 512 + 28), 600);
}

/* A differencing disk: per-sector fall-through, bitmap bits of committed
 * blocks set at flush, and parallel readers agreeing with the model. */
#include <pthread.h>

#define DIFF_SIZE (8u << 20)

static uint8_t *diff_model;
static struct img *diff_img;

static void *diff_reader(void *arg)
{
	uint8_t *buf = malloc(DIFF_SIZE);
	uintptr_t bad = 0;

	(void)arg;
	for (int round = 0; round < 4 && buf; round++) {
		/* odd-sized, unaligned-to-blocks pieces */
		for (uint64_t off = 0; off < DIFF_SIZE;) {
			size_t n = 512 * (1 + (off / 512) % 700);

			if (off + n > DIFF_SIZE)
				n = DIFF_SIZE - off;
			if (img_pread(diff_img, buf + off, n, off) < 0)
				bad++;
			off += n;
		}
		if (memcmp(buf, diff_model, DIFF_SIZE))
			bad++;
	}
	free(buf);
	return (void *)bad;
}

Test(vhd_image, differencing_bitmaps_and_parallel_reads)
{
	struct img_create_options o = { .format = "vhd",
					.backing_file = "base.vhd",
					.options = "block_size=1M" };
	char err[IMG_ERRMSG_MAX];
	uint8_t sector[512], bitmap[512];
	struct img *img;
	pthread_t t[4];

	diff_model = malloc(DIFF_SIZE);
	cr_assert_not_null(diff_model);
	memset(diff_model, 0x11, DIFF_SIZE);
	create("base.vhd", DIFF_SIZE, NULL);
	cr_assert_eq(open_image(&img, "base.vhd", IMG_OPEN_RDWR, err), 0);
	cr_assert_eq(img_pwrite(img, diff_model, DIFF_SIZE, 0), 0);
	cr_assert_eq(img_close(img), 0);
	cr_assert_eq(img_create(path_in_dir("child.vhd"), &o, err, sizeof(err)),
		     0, "%s", err);

	cr_assert_eq(open_image(&img, "child.vhd", IMG_OPEN_RDWR, err), 0, "%s",
		     err);
	memset(sector, 0x22, sizeof(sector));
	cr_assert_eq(img_pwrite(img, sector, 512, 3 * 512), 0);
	memcpy(diff_model + 3 * 512, sector, 512);
	cr_assert_eq(img_flush(img), 0);
	/* block 0 is committed now: these bits wait for the next flush */
	memset(sector, 0x33, sizeof(sector));
	for (int i = 100; i < 104; i++) {
		cr_assert_eq(img_pwrite(img, sector, 512, i * 512ull), 0);
		memcpy(diff_model + i * 512, sector, 512);
	}
	cr_assert_eq(img_pread(img, sector, 512, 99 * 512), 0);
	cr_assert_eq(sector[0], 0x11, "sector 99 still comes from the parent");
	cr_assert_eq(img_pread(img, sector, 512, 101 * 512), 0);
	cr_assert_eq(sector[0], 0x33);
	/* zeros written into a differencing disk hide the parent */
	cr_assert_eq(img_write_zeroes(img, 5u << 20, 4096, IMG_ZERO_MAY_UNMAP),
		     0);
	memset(diff_model + (5u << 20), 0, 4096);
	cr_assert_eq(img_close(img), 0);

	/* on disk: block 0's bitmap has bits 3 and 100..103 only */
	{
		int fd = open(path_in_dir("child.vhd"), O_RDONLY);
		uint64_t host = (uint64_t)file_be32("child.vhd", 1536) * 512;

		cr_assert_eq(pread(fd, bitmap, 512, (off_t)host), 512);
		close(fd);
	}
	cr_assert_eq(bitmap[0], 0x10, "bit 3: %#x", bitmap[0]);
	cr_assert_eq(bitmap[12], 0x0f, "bits 100..103: %#x", bitmap[12]);
	cr_assert_eq(bitmap[13], 0);

	cr_assert_eq(open_image(&diff_img, "child.vhd", IMG_OPEN_RDONLY, err),
		     0, "%s", err);
	for (int i = 0; i < 4; i++)
		cr_assert_eq(pthread_create(&t[i], NULL, diff_reader, NULL), 0);
	for (int i = 0; i < 4; i++) {
		void *bad;

		pthread_join(t[i], &bad);
		cr_expect_null(bad, "reader %d saw wrong data", i);
	}
	img_close(diff_img);
	free(diff_model);
}
