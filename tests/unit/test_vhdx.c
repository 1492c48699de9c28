/* SPDX-License-Identifier: MIT */
/* Unit tests of the VHDX driver: the pure codec (CRC-32C, GUIDs, header,
 * region and metadata tables, log entries, UTF-16, BAT geometry) and,
 * through libimg, create/write/read, the log, block states, check/repair
 * and the rejection of bad input. */
#include "formats/vhdx/vhdx_ondisk.h"
#include "img.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- codec ---------------------------------------------------------------*/

Test(vhdx_codec, crc32c_known_vectors)
{
	/* RFC 3720 (iSCSI) B.4 and the usual check value. */
	uint8_t zeros[32] = { 0 }, ones[32], inc[32];

	memset(ones, 0xff, sizeof(ones));
	for (int i = 0; i < 32; i++)
		inc[i] = (uint8_t)i;
	cr_assert_eq(vhdx_crc32c(0, "123456789", 9), 0xe3069283u);
	cr_assert_eq(vhdx_crc32c(0, zeros, 32), 0x8a9136aau);
	cr_assert_eq(vhdx_crc32c(0, ones, 32), 0x62a8ab43u);
	cr_assert_eq(vhdx_crc32c(0, inc, 32), 0x46dd794eu);
	/* Incremental equals one shot, across the 8-byte slicing. */
	cr_assert_eq(vhdx_crc32c(vhdx_crc32c(0, inc, 13), inc + 13, 19),
		     0x46dd794eu);
}

Test(vhdx_codec, checksum_field_is_zero_while_computing)
{
	uint8_t buf[4096];

	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)(i * 7);
	vhdx_checksum_set(buf, sizeof(buf), 4);
	cr_assert(vhdx_checksum_ok(buf, sizeof(buf), 4));
	uint32_t stored = vhdx_get32(buf + 4);

	vhdx_put32(buf + 4, 0);
	cr_assert_eq(vhdx_crc32c(0, buf, sizeof(buf)), stored);
	vhdx_put32(buf + 4, stored);
	buf[100] ^= 1;
	cr_assert_not(vhdx_checksum_ok(buf, sizeof(buf), 4));
}

Test(vhdx_codec, guid_text_round_trip_and_layout)
{
	struct vhdx_guid g;
	char text[39];

	/* The BAT region GUID of [MS-VHDX] 2.2.3.2. */
	cr_assert(
		vhdx_guid_parse("{2DC27766-F623-4200-9D64-115E9BFD4A08}", &g));
	cr_assert(vhdx_guid_equal(&g, &vhdx_guid_bat));
	cr_assert_eq(g.b[0], 0x66); /* first group little-endian */
	cr_assert_eq(g.b[8], 0x9d); /* last eight bytes as written */
	vhdx_guid_format(&g, text, true);
	cr_assert_str_eq(text, "{2dc27766-f623-4200-9d64-115e9bfd4a08}");
	vhdx_guid_format(&g, text, false);
	cr_assert_str_eq(text, "2dc27766-f623-4200-9d64-115e9bfd4a08");
	cr_assert(vhdx_guid_parse(text, &g));
	cr_assert_not(
		vhdx_guid_parse("{2dc27766-f623-4200-9d64-115e9bfd4a0}", &g));
	cr_assert_not(
		vhdx_guid_parse("2dc27766+f623-4200-9d64-115e9bfd4a08", &g));
	vhdx_guid_generate(&g);
	cr_assert_eq(g.b[7] >> 4, 4);
	cr_assert_not(vhdx_guid_is_zero(&g));
}

Test(vhdx_codec, header_round_trip)
{
	struct vhdx_header h = { .sequence = 77,
				 .version = 1,
				 .log_length = 1 << 20,
				 .log_offset = 1 << 20 },
			   back;
	uint8_t buf[VHDX_HEADER_SIZE];

	vhdx_guid_generate(&h.file_write_guid);
	vhdx_guid_generate(&h.data_write_guid);
	vhdx_header_encode(&h, buf);
	cr_assert(!memcmp(buf, "head", 4));
	cr_assert(vhdx_checksum_ok(buf, sizeof(buf), 4));
	vhdx_header_decode(buf, &back);
	cr_assert_eq(back.sequence, 77);
	cr_assert_eq(back.version, 1);
	cr_assert_eq(back.log_length, 1u << 20);
	cr_assert_eq(back.log_offset, 1u << 20);
	cr_assert(vhdx_guid_equal(&back.data_write_guid, &h.data_write_guid));
	cr_assert(vhdx_guid_is_zero(&back.log_guid));
}

Test(vhdx_codec, region_and_metadata_tables)
{
	uint8_t *buf = malloc(VHDX_REGION_TABLE_SIZE);
	struct vhdx_region r[2] = { { vhdx_guid_bat, 3 << 20, 1 << 20, true },
				    { vhdx_guid_metadata, 2 << 20, 1 << 20,
				      true } },
			   back;
	struct vhdx_metadata_entry m = { vhdx_guid_virtual_disk_size, 65536, 8,
					 VHDX_META_IS_REQUIRED |
						 VHDX_META_IS_VIRTUAL_DISK },
				   mb;

	vhdx_region_table_encode(r, 2, buf);
	cr_assert(!memcmp(buf, "regi", 4));
	cr_assert(vhdx_checksum_ok(buf, VHDX_REGION_TABLE_SIZE, 4));
	cr_assert_eq(vhdx_region_count(buf), 2);
	vhdx_region_decode(buf, 1, &back);
	cr_assert(vhdx_guid_equal(&back.guid, &vhdx_guid_metadata));
	cr_assert_eq(back.offset, 2u << 20);
	cr_assert(back.required);
	vhdx_metadata_table_encode(&m, 1, buf);
	cr_assert(!memcmp(buf, "metadata", 8));
	cr_assert_eq(vhdx_metadata_count(buf), 1);
	vhdx_metadata_decode(buf, 0, &mb);
	cr_assert_eq(mb.offset, 65536);
	cr_assert_eq(mb.flags, 6);
	free(buf);
}

Test(vhdx_codec, log_descriptor_sectors)
{
	/* 64-byte header + 126 descriptors fill the first sector. */
	cr_assert_eq(vhdx_log_descriptor_sectors(0), 1);
	cr_assert_eq(vhdx_log_descriptor_sectors(126), 1);
	cr_assert_eq(vhdx_log_descriptor_sectors(127), 2);
	cr_assert_eq(vhdx_log_descriptor_sectors(254), 2);
	cr_assert_eq(vhdx_log_descriptor_sectors(255), 3);
}

Test(vhdx_codec, utf16_round_trip)
{
	uint8_t u[64];
	char back[64];
	int n = vhdx_utf8_to_utf16(".\\p\xc3\xa4rent \xf0\x9f\x98\x80.vhdx", u,
				   sizeof(u));

	cr_assert_gt(n, 0);
	cr_assert_eq(vhdx_get16(u + 6), 0xe4);
	cr_assert_geq(vhdx_utf16_to_utf8(u, (size_t)n, back, sizeof(back)), 0);
	cr_assert_str_eq(back, ".\\p\xc3\xa4rent \xf0\x9f\x98\x80.vhdx");
	/* A lone low surrogate is malformed. */
	vhdx_put16(u, 0xdc00);
	cr_assert_lt(vhdx_utf16_to_utf8(u, 2, back, sizeof(back)), 0);
}

Test(vhdx_codec, bat_geometry)
{
	struct vhdx_bat_geometry g;

	/* 512-byte sectors, 32 MiB blocks: chunk ratio 2^23*512/2^25 = 128. */
	vhdx_bat_geometry(10ull << 30, 32u << 20, 512, false, &g);
	cr_assert_eq(g.chunk_ratio, 128);
	cr_assert_eq(g.data_blocks, 320);
	cr_assert_eq(g.entries, 320 + 319 / 128);
	vhdx_bat_geometry(10ull << 30, 32u << 20, 512, true, &g);
	cr_assert_eq(g.bitmap_blocks, 3);
	cr_assert_eq(g.entries, 3 * 129);
	/* 4096-byte sectors, 1 MiB blocks: 32768. */
	vhdx_bat_geometry(1ull << 30, 1u << 20, 4096, false, &g);
	cr_assert_eq(g.chunk_ratio, 32768);
	cr_assert_eq(g.entries, 1024);
	/* A hidden tail still needs its block. */
	vhdx_bat_geometry((64ull << 20) + 512, 8u << 20, 512, false, &g);
	cr_assert_eq(g.data_blocks, 9);
}

/* ---- through libimg --------------------------------------------------------*/

static char dir[64];

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/test_vhdx.XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	cr_assert_eq(system(cmd), 0);
}

static void make_image(const char *path, uint64_t size, const char *opts)
{
	char err[IMG_ERRMSG_MAX];
	struct img_create_options co = { .format = "vhdx",
					 .size = size,
					 .options = opts };

	cr_assert_eq(img_create(path, &co, err, sizeof(err)), 0, "%s", err);
}

static struct img *open_image(const char *path, unsigned flags)
{
	char err[IMG_ERRMSG_MAX];
	struct img *img;
	struct img_open_options oo = { .format = "vhdx", .flags = flags };

	cr_assert_eq(img_open(&img, path, &oo, err, sizeof(err)), 0, "%s", err);
	return img;
}

static bool all_zero(const uint8_t *buf, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (buf[i])
			return false;
	return true;
}

/* The current header (higher sequence number) of the file. */
static void current_header(const char *path, struct vhdx_header *h)
{
	uint8_t buf[VHDX_HEADER_SIZE];
	struct vhdx_header h2;
	int fd = open(path, O_RDONLY);

	cr_assert_geq(fd, 0);
	cr_assert_eq(pread(fd, buf, sizeof(buf), VHDX_HEADER1_OFFSET),
		     (ssize_t)sizeof(buf));
	vhdx_header_decode(buf, h);
	cr_assert_eq(pread(fd, buf, sizeof(buf), VHDX_HEADER2_OFFSET),
		     (ssize_t)sizeof(buf));
	vhdx_header_decode(buf, &h2);
	if (h2.sequence > h->sequence)
		*h = h2;
	close(fd);
}

static void fill(uint8_t *buf, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (uint8_t)(seed * 31 + i * 7 + (i >> 9));
}

Test(vhdx_image, write_read_and_block_states, .init = setup, .fini = teardown)
{
	char path[128];
	uint8_t *a = malloc(3 << 20), *b = malloc(3 << 20);
	struct img_extent ext;

	snprintf(path, sizeof(path), "%s/a.vhdx", dir);
	make_image(path, 16 << 20, "block_size=1M");
	struct img *img = open_image(path, IMG_OPEN_RDWR);

	fill(a, 3 << 20, 1);
	/* Unaligned within a block, across two blocks. */
	cr_assert_eq(img_pwrite(img, a, (3 << 20) - 1024, (1 << 20) + 512), 0);
	cr_assert_eq(img_pread(img, b, (3 << 20) - 1024, (1 << 20) + 512), 0);
	cr_assert(!memcmp(a, b, (3 << 20) - 1024));
	cr_assert_eq(img_block_status(img, 0, 16 << 20, &ext), 0);
	cr_assert_eq(ext.length, 1 << 20);
	cr_assert_eq(ext.flags & IMG_EXTENT_DATA, 0);
	cr_assert_eq(img_block_status(img, 1 << 20, 16 << 20, &ext), 0);
	cr_assert(ext.flags & IMG_EXTENT_DATA);
	/* Whole-block zeroing: the ZERO state, reads zeros. */
	cr_assert_eq(
		img_write_zeroes(img, 2 << 20, 1 << 20, IMG_ZERO_MAY_UNMAP), 0);
	cr_assert_eq(img_block_status(img, 2 << 20, 1 << 20, &ext), 0);
	cr_assert(ext.flags & IMG_EXTENT_ZERO);
	cr_assert_eq(img_pread(img, b, 1 << 20, 2 << 20), 0);
	for (int i = 0; i < 1 << 20; i++)
		cr_assert_eq(b[i], 0);
	/* Discard: UNMAPPED, reads zeros in a disk without a parent. */
	cr_assert_eq(img_discard(img, 1 << 20, 1 << 20), 0);
	cr_assert_eq(img_pread(img, b, 1 << 20, 1 << 20), 0);
	cr_assert(all_zero(b, 1 << 20));
	cr_assert_eq(img_close(img), 0);

	/* After close: the log GUID is zero again, the rest as left. */
	img = open_image(path, IMG_OPEN_RDONLY);
	cr_assert_eq(img_pread(img, b, 1 << 20, 3 << 20), 0);
	cr_assert(!memcmp(b, a + (2 << 20) - 512, (1 << 20) - 512));
	struct img_check_result res = { 0 };

	cr_assert_eq(img_check(img, &res, 0), 0);
	cr_assert_eq(res.corruptions, 0);
	cr_assert_eq(res.leaks, 0);
	img_close(img);
	free(a);
	free(b);
}

Test(vhdx_image, session_guids_and_log_guid, .init = setup, .fini = teardown)
{
	char path[128];
	struct vhdx_header before, during, after;
	uint8_t buf[4096];

	snprintf(path, sizeof(path), "%s/s.vhdx", dir);
	make_image(path, 8 << 20, NULL);
	current_header(path, &before);
	cr_assert(vhdx_guid_is_zero(&before.log_guid));
	struct img *img = open_image(path, IMG_OPEN_RDWR);

	/* Opening read-write changes nothing until the first write. */
	current_header(path, &during);
	cr_assert_eq(during.sequence, before.sequence);
	fill(buf, sizeof(buf), 3);
	cr_assert_eq(img_pwrite(img, buf, sizeof(buf), 0), 0);
	cr_assert_eq(img_flush(img), 0);
	current_header(path, &during);
	cr_assert_gt(during.sequence, before.sequence);
	cr_assert_not(vhdx_guid_is_zero(&during.log_guid));
	cr_assert_not(vhdx_guid_equal(&during.data_write_guid,
				      &before.data_write_guid));
	cr_assert_not(vhdx_guid_equal(&during.file_write_guid,
				      &before.file_write_guid));
	cr_assert_eq(img_close(img), 0);
	current_header(path, &after);
	cr_assert(vhdx_guid_is_zero(&after.log_guid));
	cr_assert(vhdx_guid_equal(&after.data_write_guid,
				  &during.data_write_guid));
}

/* A child writes, flushes (the BAT goes through the log) and is killed
 * before the session ends: the log is pending. */
static void write_and_die(const char *path, uint8_t *a)
{
	pid_t pid = fork();

	cr_assert_geq(pid, 0);
	if (pid == 0) {
		char err[IMG_ERRMSG_MAX];
		struct img *img;
		struct img_open_options oo = { .format = "vhdx",
					       .flags = IMG_OPEN_RDWR };

		if (img_open(&img, path, &oo, err, sizeof(err)) ||
		    img_pwrite(img, a, 2 << 20, 1 << 20) || img_flush(img))
			_exit(1);
		kill(getpid(), SIGKILL);
	}
	int status;

	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFSIGNALED(status));
}

Test(vhdx_image, pending_log_replayed_in_memory_then_on_disk, .init = setup,
     .fini = teardown)
{
	char path[128];
	uint8_t *a = malloc(2 << 20), *b = malloc(2 << 20);
	struct vhdx_header h;
	struct img_info *info = NULL;

	snprintf(path, sizeof(path), "%s/l.vhdx", dir);
	make_image(path, 8 << 20, "block_size=1M");
	fill(a, 2 << 20, 9);
	write_and_die(path, a);
	current_header(path, &h);
	cr_assert_not(vhdx_guid_is_zero(&h.log_guid));

	/* Read-only: replayed into memory; the file is not written. */
	struct img *img = open_image(path, IMG_OPEN_RDONLY);

	cr_assert_eq(img_pread(img, b, 2 << 20, 1 << 20), 0);
	cr_assert(!memcmp(a, b, 2 << 20));
	cr_assert_eq(img_get_info(img, &info), 0);
	cr_assert(info->dirty);
	struct img_check_result res = { 0 };

	cr_assert_eq(img_check(img, &res, 0), 0);
	cr_assert_eq(res.corruptions, 1);
	img_close(img);
	struct vhdx_header h2;

	current_header(path, &h2);
	cr_assert_eq(h2.sequence, h.sequence);

	/* Read-write: replayed on disk, log GUID cleared. */
	img = open_image(path, IMG_OPEN_RDWR);
	cr_assert_eq(img_pread(img, b, 2 << 20, 1 << 20), 0);
	cr_assert(!memcmp(a, b, 2 << 20));
	img_close(img);
	current_header(path, &h2);
	cr_assert(vhdx_guid_is_zero(&h2.log_guid));
	img = open_image(path, IMG_OPEN_RDONLY | IMG_OPEN_CHECK);
	memset(&res, 0, sizeof(res));
	cr_assert_eq(img_check(img, &res, 0), 0);
	cr_assert_eq(res.corruptions, 0);
	img_close(img);
	free(a);
	free(b);
	img_info_free(info);
}

static void expect_refused(const char *path, const char *what)
{
	char err[IMG_ERRMSG_MAX];
	struct img *img;
	struct img_open_options oo = { .format = "vhdx" };

	cr_assert_lt(img_open(&img, path, &oo, err, sizeof(err)), 0);
	cr_assert_not_null(strstr(err, what), "%s", err);
	cr_assert_null(strchr(err, '\n'));
}

static void poke(const char *path, uint64_t off, const void *data, size_t len)
{
	int fd = open(path, O_WRONLY);

	cr_assert_geq(fd, 0);
	cr_assert_eq(pwrite(fd, data, len, (off_t)off), (ssize_t)len);
	close(fd);
}

Test(vhdx_image, bad_input_refused, .init = setup, .fini = teardown)
{
	char path[128];
	uint8_t junk = 0x5a;
	uint64_t entry = (4096ull << 20) | VHDX_BLOCK_FULLY_PRESENT;

	snprintf(path, sizeof(path), "%s/b.vhdx", dir);
	make_image(path, 8 << 20, "block_size=1M");
	/* One damaged header: the other is used. */
	poke(path, VHDX_HEADER2_OFFSET + 200, &junk, 1);
	struct img *img = open_image(path, IMG_OPEN_RDONLY);

	img_close(img);
	poke(path, VHDX_HEADER1_OFFSET + 200, &junk, 1);
	expect_refused(path, "both VHDX headers");

	make_image(path, 8 << 20, "block_size=1M");
	/* Our layout: the BAT at 3 MiB (after the 1 MiB log and metadata). */
	poke(path, 3 << 20, &entry, 8);
	expect_refused(path, "past the end of the file");
	img = open_image(path, IMG_OPEN_RDWR | IMG_OPEN_CHECK);
	struct img_check_result res = { 0 };

	cr_assert_eq(img_check(img, &res, IMG_CHECK_FIX_ERRORS), 0);
	cr_assert_eq(res.corruptions, 1);
	cr_assert_eq(res.corruptions_fixed, 1);
	img_close(img);
	img = open_image(path, IMG_OPEN_RDONLY);
	img_close(img);

	uint8_t sig[8] = "vhdxfilf";

	poke(path, 0, sig, 8);
	expect_refused(path, "not a VHDX");
}

Test(vhdx_image, create_options_checked, .init = setup, .fini = teardown)
{
	char path[128], err[IMG_ERRMSG_MAX];
	struct img_create_options co = { .format = "vhdx", .size = 8 << 20 };

	snprintf(path, sizeof(path), "%s/c.vhdx", dir);
	co.options = "block_size=3M";
	cr_assert_lt(img_create(path, &co, err, sizeof(err)), 0);
	cr_assert_not_null(strstr(err, "power of two"));
	co.options = "logical_sector_size=1024";
	cr_assert_lt(img_create(path, &co, err, sizeof(err)), 0);
	co.options = "log_size=1536K";
	cr_assert_lt(img_create(path, &co, err, sizeof(err)), 0);
	co.options = NULL;
	co.subformat = "differencing";
	cr_assert_lt(img_create(path, &co, err, sizeof(err)), 0);
	co.subformat = "fixed";
	co.options = "block_size=2M,logical_sector_size=4096";
	cr_assert_eq(img_create(path, &co, err, sizeof(err)), 0, "%s", err);
	struct img *img = open_image(path, IMG_OPEN_RDONLY);
	struct img_info *info = NULL;

	cr_assert_eq(img_get_info(img, &info), 0);
	cr_assert_str_eq(info->subformat, "fixed");
	cr_assert_eq(info->cluster_size, 2u << 20);
	cr_assert_eq(img_size(img), 8u << 20);
	img_close(img);
	img_info_free(info);
}
