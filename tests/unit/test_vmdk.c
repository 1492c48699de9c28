/* SPDX-License-Identifier: MIT */
/* Unit tests for the VMDK driver: the descriptor parser and writer (real
 * descriptors from VMware, VirtualBox-style quirks, broken ones), sparse
 * header validation, layout arithmetic, stream markers, and the driver
 * through libimg: writes, parents, zero grains, stream writing, check and
 * repair, and every kind of bad input. */
#include "../../formats/vmdk/vmdk_internal.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[64];
static char err[IMG_ERRMSG_MAX];

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/test_vmdk.XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	cr_expect_eq(system(cmd), 0);
}

TestSuite(vmdk_desc);
TestSuite(vmdk_header);
TestSuite(vmdk_img, .init = setup, .fini = teardown);

static const char *path_in(const char *name)
{
	static char p[8][128];
	static int i;

	i = (i + 1) % 8;
	snprintf(p[i], sizeof(p[i]), "%s/%s", dir, name);
	return p[i];
}

/* ---- descriptor -----------------------------------------------------------*/

/* VMware Server 1.0 (JNode-1.vmdk), byte for byte. */
static const char jnode_split[] = "# Disk DescriptorFile\n"
				  "version=1\n"
				  "CID=0684ee49\n"
				  "parentCID=ffffffff\n"
				  "createType=\"twoGbMaxExtentSparse\"\n"
				  "\n"
				  "# Extent description\n"
				  "RW 4192256 SPARSE \"JNode-1-s001.vmdk\"\n"
				  "RW 4192256 SPARSE \"JNode-1-s002.vmdk\"\n"
				  "RW 4192256 SPARSE \"JNode-1-s003.vmdk\"\n"
				  "RW 4192256 SPARSE \"JNode-1-s004.vmdk\"\n"
				  "RW 8192 SPARSE \"JNode-1-s005.vmdk\"\n"
				  "\n"
				  "# The Disk Data Base \n"
				  "#DDB\n"
				  "\n"
				  "ddb.adapterType = \"ide\"\n"
				  "ddb.geometry.sectors = \"63\"\n"
				  "ddb.geometry.heads = \"16\"\n"
				  "ddb.geometry.cylinders = \"16383\"\n"
				  "ddb.virtualHWVersion = \"4\"\n";

Test(vmdk_desc, parses_vmware_split_descriptor)
{
	struct vmdk_desc d;

	cr_assert_eq(vmdk_desc_parse(&d, jnode_split, strlen(jnode_split), err,
				     sizeof(err)),
		     0, "%s", err);
	cr_expect_eq(d.version, 1);
	cr_expect_eq(d.cid, 0x0684ee49u);
	cr_expect_eq(d.parent_cid, 0xffffffffu);
	cr_expect_str_eq(d.create_type, "twoGbMaxExtentSparse");
	cr_assert_eq(d.nextents, 5);
	cr_expect_eq(d.extents[4].sectors, 8192);
	cr_expect_eq(d.extents[0].type, VMDK_EXTENT_SPARSE);
	cr_expect_str_eq(d.extents[2].filename, "JNode-1-s003.vmdk");
	cr_expect_eq(vmdk_desc_total_sectors(&d), 4ull * 4192256 + 8192);
	cr_expect_str_eq(vmdk_desc_get(&d, "ddb.geometry.cylinders"), "16383");
	cr_expect_null(d.parent_hint);
	vmdk_desc_free(&d);
}

/* iotest-version3.vmdk: trailing blanks after values, CRLF added here. */
Test(vmdk_desc, tolerates_crlf_trailing_blanks_and_comments)
{
	static const char text[] =
		"# Disk DescriptorFile\r\n"
		"version=1 \r\n"
		"CID=a454774a \r\n"
		"parentCID=ffffffff \r\n"
		"   # an indented comment\r\n"
		"createType=\"streamOptimized\" \r\n"
		"RDONLY 33554432 SPARSE \"generated-stream.vmdk\"\r\n"
		"ddb.longContentID = \"f56c691c480fc22c0f8b7effd5dbb1b1\"\r\n"
		"ddb.toolsVersion = 8389\r\n"
		"\0\0\0 garbage after the NUL padding is ignored";
	struct vmdk_desc d;
	char *out;
	size_t len;

	cr_assert_eq(vmdk_desc_parse(&d, text, sizeof(text), err, sizeof(err)),
		     0, "%s", err);
	cr_expect_eq(d.cid, 0xa454774au);
	cr_expect_str_eq(d.create_type, "streamOptimized");
	cr_expect_eq(d.extents[0].access, VMDK_ACCESS_RDONLY);
	cr_expect_str_eq(vmdk_desc_get(&d, "ddb.longContentID"),
			 "f56c691c480fc22c0f8b7effd5dbb1b1");
	/* unquoted values stay unquoted when written back */
	cr_assert_eq(vmdk_desc_format(&d, &out, &len), 0);
	cr_expect_not_null(strstr(out, "ddb.toolsVersion = 8389\n"));
	cr_expect_not_null(strstr(out, "ddb.longContentID = \"f56c"));
	cr_expect_not_null(strstr(out, "RDONLY 33554432 SPARSE "
				       "\"generated-stream.vmdk\"\n"));
	free(out);
	vmdk_desc_free(&d);
}

Test(vmdk_desc, keeps_unknown_keys_and_round_trips)
{
	static const char text[] =
		"# Disk DescriptorFile\n"
		"version=1\n"
		"encoding=\"windows-1252\"\n"
		"CID=fffffffe\n"
		"parentCID=12345678\n"
		"isNativeSnapshot=\"no\"\n"
		"createType=\"monolithicFlat\"\n"
		"parentFileNameHint=\"/vm/base disk.vmdk\"\n"
		"RW 2048 FLAT \"my disk-flat.vmdk\" 0\n"
		"RW 1024 ZERO\n"
		"RW 100 VMFS \"raw-flat.vmdk\" 77\n"
		"ddb.uuid = \"60 00 C2 9b 10 87 4d f6-82 3c f7 73 27 0d 3c d1\"\n"
		"ddb.custom.thing = \"x = y\"\n";
	struct vmdk_desc d, d2;
	uint8_t uuid[16];
	char *out;
	size_t len;

	cr_assert_eq(vmdk_desc_parse(&d, text, strlen(text), err, sizeof(err)),
		     0, "%s", err);
	cr_expect_str_eq(d.parent_hint, "/vm/base disk.vmdk");
	cr_expect_str_eq(d.encoding, "windows-1252");
	cr_expect_str_eq(vmdk_desc_get(&d, "isNativeSnapshot"), "no");
	cr_expect_str_eq(vmdk_desc_get(&d, "ddb.custom.thing"), "x = y");
	cr_assert_eq(d.nextents, 3);
	cr_expect_str_eq(d.extents[0].filename, "my disk-flat.vmdk");
	cr_expect_eq(d.extents[1].type, VMDK_EXTENT_ZERO);
	cr_expect_null(d.extents[1].filename);
	cr_expect_eq(d.extents[2].type, VMDK_EXTENT_VMFS);
	cr_expect_eq(d.extents[2].offset, 77);
	cr_assert_eq(vmdk_uuid_parse(vmdk_desc_get(&d, "ddb.uuid"), uuid), 0);
	cr_expect_eq(uuid[0], 0x60);
	cr_expect_eq(uuid[15], 0xd1);

	cr_assert_eq(vmdk_desc_format(&d, &out, &len), 0);
	cr_assert_eq(vmdk_desc_parse(&d2, out, len, err, sizeof(err)), 0, "%s",
		     err);
	cr_expect_eq(d2.cid, d.cid);
	cr_expect_eq(d2.parent_cid, 0x12345678u);
	cr_expect_str_eq(d2.parent_hint, d.parent_hint);
	cr_expect_eq(d2.nextents, 3);
	cr_expect_eq(d2.extents[2].offset, 77);
	cr_expect_str_eq(vmdk_desc_get(&d2, "isNativeSnapshot"), "no");
	cr_expect_str_eq(vmdk_desc_get(&d2, "ddb.custom.thing"), "x = y");
	/* VMware's order: header keys, extents, then the DDB. */
	cr_expect(strstr(out, "createType") < strstr(out, "RW 2048"));
	cr_expect(strstr(out, "RW 100") < strstr(out, "#DDB"));
	free(out);
	vmdk_desc_free(&d);
	vmdk_desc_free(&d2);
}

Test(vmdk_desc, rejects_broken_descriptors)
{
	static const struct {
		const char *text, *needle;
	} bad[] = {
		{ "version=1\nCID=zz\nRW 1 FLAT \"a\" 0\n", "CID" },
		{ "version=1\nCID=1\ncreateType=\"x\"\n", "no extent" },
		{ "version=1\nRW 12 BOGUS \"a\"\n", "unknown extent type" },
		{ "version=1\nRW twelve FLAT \"a\" 0\n", "not a number" },
		{ "version=1\nRW 12 FLAT\n", "without a file name" },
		{ "version=1\nRW 12 FLAT \"a\n", "unterminated" },
		{ "version=1\nthis line means nothing\nRW 1 ZERO\n", "line 2" },
		{ "KDMV\x01\x02\x03 binary", "control character" },
		{ "hello world\n", "line 1" },
		{ "", "not a VMDK descriptor" },
	};
	struct vmdk_desc d;
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		cr_expect_eq(vmdk_desc_parse(&d, bad[i].text,
					     strlen(bad[i].text), err,
					     sizeof(err)),
			     -EINVAL, "case %zu", i);
		cr_expect_not_null(strstr(err, bad[i].needle),
				   "case %zu: '%s' lacks '%s'", i, err,
				   bad[i].needle);
	}
}

Test(vmdk_desc, set_and_parent_hint)
{
	struct vmdk_desc d;

	cr_assert_eq(vmdk_desc_parse(&d, jnode_split, strlen(jnode_split), err,
				     sizeof(err)),
		     0);
	cr_assert_eq(vmdk_desc_set(&d, "ddb.geometry.cylinders", "99"), 0);
	cr_assert_eq(vmdk_desc_set(&d, "ddb.new", "v"), 0);
	cr_expect_str_eq(vmdk_desc_get(&d, "ddb.geometry.cylinders"), "99");
	cr_expect_str_eq(vmdk_desc_get(&d, "ddb.new"), "v");
	cr_assert_eq(vmdk_desc_set_parent_hint(&d, "p.vmdk"), 0);
	cr_expect_str_eq(d.parent_hint, "p.vmdk");
	cr_assert_eq(vmdk_desc_set_parent_hint(&d, NULL), 0);
	cr_expect_null(d.parent_hint);
	vmdk_desc_free(&d);
}

Test(vmdk_desc, uuid_text_round_trip)
{
	uint8_t in[16], out[16];
	char text[48];
	int i;

	for (i = 0; i < 16; i++)
		in[i] = (uint8_t)(i * 17 + 3);
	vmdk_uuid_format_ddb(in, text);
	cr_expect_eq(strlen(text), 47);
	cr_expect_eq(text[23], '-');
	cr_assert_eq(vmdk_uuid_parse(text, out), 0);
	cr_expect_eq(memcmp(in, out, 16), 0);
	cr_expect_eq(vmdk_uuid_parse("60 00 C2", out), -EINVAL);
	cr_expect_eq(vmdk_uuid_parse("zz", out), -EINVAL);
}

/* ---- sparse header ----------------------------------------------------------*/

static struct vmdk_sparse_header good_header(void)
{
	struct vmdk_sparse_header h;

	vmdk_sparse_header_init(&h, 2097152, 128, true, false, false);
	return h;
}

Test(vmdk_header, init_matches_vmware_layout)
{
	struct vmdk_sparse_header h = good_header();
	uint32_t n;

	cr_expect_eq(h.magic, VMDK_SPARSE_MAGIC);
	cr_expect_eq(h.version, 1);
	cr_expect_eq(h.flags, VMDK_FLAG_NL_DETECT | VMDK_FLAG_REDUNDANT_GT);
	cr_expect_eq(h.desc_offset, 1);
	cr_expect_eq(h.desc_size, 20);
	cr_expect_eq(h.rgd_offset, 21);
	/* 1 GiB: 32 GTs of 4 sectors, a 1-sector directory each */
	cr_expect_eq(h.gd_offset, 21 + 1 + 32 * 4);
	cr_expect_eq(h.overhead, 384); /* 21+129+129 = 279 -> grain aligned */
	cr_expect_eq(h.double_end_line_char1, '\r');
	cr_assert_eq(vmdk_sparse_header_validate(&h, h.overhead * 512, &n, err,
						 sizeof(err)),
		     0, "%s", err);
	cr_expect_eq(n, 32);
	vmdk_sparse_header_init(&h, 2097152, 128, true, true, false);
	cr_expect_eq(h.version, 3);
	cr_expect_eq(h.gd_offset, VMDK_GD_AT_END);
	cr_expect(h.flags & VMDK_FLAG_COMPRESSED);
	cr_expect(h.flags & VMDK_FLAG_MARKERS);
	cr_expect_eq(h.compress_algorithm, VMDK_COMPRESS_DEFLATE);
	vmdk_sparse_header_init(&h, 1000, 128, false, false, true);
	cr_expect_eq(h.version, 2);
	cr_expect(h.flags & VMDK_FLAG_ZERO_GRAIN);
	cr_expect_eq(h.desc_offset, 0);
}

Test(vmdk_header, endian_conversion_round_trips)
{
	struct vmdk_sparse_header h = good_header(), d = h;
	const uint8_t *b = (const uint8_t *)&d;

	vmdk_sparse_header_to_disk(&d);
	cr_expect_eq(memcmp(b, "KDMV", 4), 0);
	cr_expect_eq(b[12], 0x00); /* capacity 0x200000, little-endian */
	cr_expect_eq(b[14], 0x20);
	vmdk_sparse_header_to_cpu(&d);
	cr_expect_eq(memcmp(&h, &d, sizeof(h)), 0);
}

Test(vmdk_header, rejects_each_bad_field)
{
	struct vmdk_sparse_header h;
	uint64_t size = 384 * 512;
	uint32_t n;

#define BAD(stmt, needle)                                                      \
	do {                                                                   \
		h = good_header();                                             \
		stmt;                                                          \
		err[0] = '\0';                                                 \
		cr_expect_eq(vmdk_sparse_header_validate(&h, size, &n, err,    \
							 sizeof(err)),         \
			     -EINVAL, #stmt);                                  \
		cr_expect_not_null(strstr(err, needle), "%s: %s", #stmt, err); \
	} while (0)
	BAD(h.magic = 0x12345678, "magic");
	BAD(h.version = 4, "version");
	BAD(h.grain_size = 0, "grainSize");
	BAD(h.grain_size = 3, "grainSize");
	BAD(h.grain_size = 1u << 24, "grainSize");
	BAD(h.num_gtes_per_gt = 506, "numGTEsPerGT");
	BAD(h.capacity = 1ull << 61, "capacity");
	BAD(h.gd_offset = 100000, "grain directory");
	BAD(h.rgd_offset = 0, "redundant");
	BAD(h.desc_size = 100000, "descriptor");
	BAD(h.desc_offset = 1000, "descriptor");
	BAD(h.non_end_line_char = '\n', "newline");
	BAD((h.flags |= VMDK_FLAG_COMPRESSED, h.compress_algorithm = 7),
	    "compressAlgorithm");
	BAD(h.gd_offset = VMDK_GD_AT_END, "not stream");
#undef BAD
}

Test(vmdk_header, layout_arithmetic_and_geometry)
{
	uint32_t c, hd, s;

	cr_expect_eq(vmdk_gt_sectors(512), 4);
	cr_expect_eq(vmdk_gd_sectors(1), 1);
	cr_expect_eq(vmdk_gd_sectors(128), 1);
	cr_expect_eq(vmdk_gd_sectors(129), 2);
	cr_expect_eq(vmdk_gd_entries_for(65536, 128, 512), 1);
	cr_expect_eq(vmdk_gd_entries_for(65537, 128, 512), 2);
	cr_expect_eq(vmdk_gd_entries_for(0, 128, 512), 0);
	vmdk_geometry(2097152, "ide", &c, &hd, &s);
	cr_expect_eq(hd, 16);
	cr_expect_eq(s, 63);
	cr_expect_eq(c, 2080); /* what JNode.vmdk records */
	vmdk_geometry(33554432, "lsilogic", &c, &hd, &s);
	cr_expect_eq(hd, 255);
	cr_expect_eq(c, 2088); /* what iotest-version3.vmdk records */
	vmdk_geometry(1ull << 40, "ide", &c, &hd, &s);
	cr_expect_eq(c, 16383);
}

Test(vmdk_header, stream_markers)
{
	struct vmdk_meta_marker m;
	uint8_t grain[512] = { 0 };
	uint64_t lba;
	uint32_t size;

	vmdk_meta_marker_init(&m, VMDK_MARKER_GT, 4);
	cr_expect_eq(vmdk_marker_parse(&m, &lba, &size), VMDK_MARKER_GT);
	cr_expect_eq(lba, 4);
	vmdk_meta_marker_init(&m, VMDK_MARKER_EOS, 0);
	cr_expect_eq(vmdk_marker_parse(&m, &lba, &size), VMDK_MARKER_EOS);
	vmdk_meta_marker_init(&m, VMDK_MARKER_FOOTER, 1);
	cr_expect_eq(vmdk_marker_parse(&m, &lba, &size), VMDK_MARKER_FOOTER);
	grain[0] = 0x80; /* lba 128 */
	grain[8] = 0x10; /* 16 compressed bytes */
	cr_expect_eq(vmdk_marker_parse(grain, &lba, &size), -1);
	cr_expect_eq(lba, 128);
	cr_expect_eq(size, 16);
}

/* ---- through libimg ----------------------------------------------------------*/

static struct img *open_img(const char *path, unsigned flags)
{
	struct img_open_options o = { .format = "vmdk", .flags = flags };
	struct img *img = NULL;

	cr_assert_eq(img_open(&img, path, &o, err, sizeof(err)), 0, "%s", err);
	return img;
}

static void create(const char *path, uint64_t size, const char *sub,
		   const char *backing)
{
	struct img_create_options o = {
		.format = "vmdk",
		.size = size,
		.subformat = sub,
		.backing_file = backing,
	};

	cr_assert_eq(img_create(path, &o, err, sizeof(err)), 0, "%s", err);
}

static void fill(uint8_t *buf, size_t len, unsigned seed)
{
	size_t i;

	for (i = 0; i < len; i++)
		buf[i] = (uint8_t)(seed * 131 + i * 7 + (i >> 9));
}

static uint64_t file_size(const char *path)
{
	struct stat st;

	cr_assert_eq(stat(path, &st), 0);
	return (uint64_t)st.st_size;
}

Test(vmdk_img, write_read_partial_grains_all_sparse_subformats)
{
	static const char *subs[] = { "monolithicSparse",
				      "twoGbMaxExtentSparse", "monolithicFlat",
				      "twoGbMaxExtentFlat" };
	uint8_t *w = malloc(300000), *r = malloc(300000);
	size_t i;

	cr_assert(w && r);
	for (i = 0; i < 4; i++) {
		char name[32];
		struct img *img;

		snprintf(name, sizeof(name), "s%zu.vmdk", i);
		create(path_in(name), 8 << 20, subs[i], NULL);
		img = open_img(path_in(name), IMG_OPEN_RDWR);
		fill(w, 300000, (unsigned)i);
		/* odd offset and length: partial grains at both ends */
		cr_assert_eq(img_pwrite(img, w, 300000, 65536 - 1024), 0, "%s",
			     img_errmsg(img));
		cr_assert_eq(img_pwrite(img, w, 512, (8 << 20) - 512), 0);
		cr_assert_eq(img_flush(img), 0);
		cr_assert_eq(img_close(img), 0);
		img = open_img(path_in(name), IMG_OPEN_RDONLY);
		cr_assert_eq(img_pread(img, r, 300000, 65536 - 1024), 0);
		cr_expect_eq(memcmp(w, r, 300000), 0, "%s", subs[i]);
		cr_assert_eq(img_pread(img, r, 4096, 0), 0);
		cr_expect(img_buf_is_zero(r, 4096), "%s", subs[i]);
		cr_assert_eq(img_pread(img, r, 512, (8 << 20) - 512), 0);
		cr_expect_eq(memcmp(w, r, 512), 0);
		img_close(img);
	}
	free(w);
	free(r);
}

Test(vmdk_img, unclean_flag_and_cid_change_on_first_write)
{
	struct img_info *info = NULL;
	struct img *img;
	char cid1[16], cid2[16];
	uint8_t buf[512];

	create(path_in("u.vmdk"), 1 << 20, NULL, NULL);
	img = open_img(path_in("u.vmdk"), IMG_OPEN_RDONLY);
	img_info_free(info);
	cr_assert_eq(img_get_info(img, &info), 0);
	cr_expect_not(info->dirty);
	cr_expect_str_eq(info->kv[1].key, "cid");
	snprintf(cid1, sizeof(cid1), "%.15s", info->kv[1].str);
	img_close(img);

	img = open_img(path_in("u.vmdk"), IMG_OPEN_RDWR);
	memset(buf, 0xab, sizeof(buf));
	cr_assert_eq(img_pwrite(img, buf, 512, 0), 0);
	/* while open for writing the header says "not closed cleanly" */
	{
		struct vmdk_sparse_header h;
		int fd = open(path_in("u.vmdk"), O_RDONLY);

		cr_assert_eq(pread(fd, &h, sizeof(h), 0), (ssize_t)sizeof(h));
		close(fd);
		cr_expect_eq(h.unclean_shutdown, 1);
	}
	cr_assert_eq(img_close(img), 0);
	img = open_img(path_in("u.vmdk"), IMG_OPEN_RDONLY);
	img_info_free(info);
	cr_assert_eq(img_get_info(img, &info), 0);
	cr_expect_not(info->dirty);
	snprintf(cid2, sizeof(cid2), "%.15s", info->kv[1].str);
	cr_expect_str_neq(cid1, cid2);
	img_close(img);
	img_info_free(info);
}

Test(vmdk_img, child_reads_through_parent_and_checks_cid)
{
	uint8_t w[4096], r[4096];
	struct img *img;
	struct img_open_options o = { .format = "vmdk" };

	create(path_in("base.vmdk"), 4 << 20, NULL, NULL);
	img = open_img(path_in("base.vmdk"), IMG_OPEN_RDWR);
	fill(w, sizeof(w), 1);
	cr_assert_eq(img_pwrite(img, w, sizeof(w), 65536), 0);
	img_close(img);
	create(path_in("child.vmdk"), 0, NULL, "base.vmdk");
	img = open_img(path_in("child.vmdk"), IMG_OPEN_RDWR);
	cr_expect_eq(img_size(img), 4 << 20);
	cr_assert_not_null(img_backing(img));
	/* a 512-byte write into the parent's grain copies the rest up */
	memset(w, 0x5a, 512);
	cr_assert_eq(img_pwrite(img, w, 512, 65536 + 1024), 0);
	cr_assert_eq(img_pread(img, r, sizeof(r), 65536), 0);
	fill(w, sizeof(w), 1);
	memset(w + 1024, 0x5a, 512);
	cr_expect_eq(memcmp(w, r, sizeof(r)), 0);
	img_close(img);
	/* the parent reads its old contents (copy-on-write) */
	img = open_img(path_in("base.vmdk"), IMG_OPEN_RDWR);
	cr_assert_eq(img_pread(img, r, sizeof(r), 65536), 0);
	fill(w, sizeof(w), 1);
	cr_expect_eq(memcmp(w, r, sizeof(r)), 0);
	/* writing the parent changes its CID: the child no longer matches */
	cr_assert_eq(img_pwrite(img, w, 512, 0), 0);
	img_close(img);
	cr_expect_neq(
		img_open(&img, path_in("child.vmdk"), &o, err, sizeof(err)), 0);
	cr_expect_not_null(strstr(err, "CID"), "%s", err);
}

Test(vmdk_img, zero_writes_allocate_nothing_and_unmap_punches)
{
	uint8_t *buf = calloc(1, 1 << 20);
	struct img *img;
	struct img_extent ext;
	uint64_t before;

	cr_assert_not_null(buf);
	create(path_in("z.vmdk"), 8 << 20, NULL, NULL);
	before = file_size(path_in("z.vmdk"));
	img = open_img(path_in("z.vmdk"), IMG_OPEN_RDWR);
	cr_assert_eq(img_pwrite(img, buf, 1 << 20, 0), 0);
	cr_assert_eq(img_write_zeroes(img, 2 << 20, 1 << 20, 0), 0);
	cr_assert_eq(img_flush(img), 0);
	cr_expect_eq(file_size(path_in("z.vmdk")), before);
	cr_assert_eq(img_block_status_layer(img, 0, 8 << 20, &ext), 0);
	cr_expect_eq(ext.depth, -1);
	cr_expect_eq(ext.length, 8 << 20);
	/* allocate, then zero with unmap: reads zero, still allocated */
	memset(buf, 1, 1 << 20);
	cr_assert_eq(img_pwrite(img, buf, 1 << 20, 0), 0);
	cr_assert_eq(img_write_zeroes(img, 0, 1 << 20, IMG_ZERO_MAY_UNMAP), 0);
	cr_assert_eq(img_pread(img, buf, 1 << 20, 0), 0);
	cr_expect(img_buf_is_zero(buf, 1 << 20));
	img_close(img);
	free(buf);
}

Test(vmdk_img, stream_writer_sequential_only)
{
	uint8_t *buf = malloc(1 << 20), *r = malloc(1 << 20);
	struct img *img;
	struct img_open_options o = { .format = "vmdk",
				      .flags = IMG_OPEN_RDWR };

	cr_assert(buf && r);
	create(path_in("st.vmdk"), 4 << 20, "streamOptimized", NULL);
	img = open_img(path_in("st.vmdk"), IMG_OPEN_RDWR | IMG_OPEN_SEQUENTIAL);
	fill(buf, 1 << 20, 3);
	cr_assert_eq(img_pwrite(img, buf, 1 << 20, 1 << 20), 0);
	cr_expect_neq(img_pwrite(img, buf, 512, 0), 0);
	cr_expect_not_null(strstr(img_errmsg(img), "sequential"));
	/* a flush in the middle leaves a readable stream */
	cr_assert_eq(img_pwrite(img, buf, 1000 * 512, 3 << 20), 0);
	cr_assert_eq(img_flush(img), 0);
	cr_assert_eq(img_pwrite(img, buf, 512, (3 << 20) + 1000 * 512), 0);
	cr_assert_eq(img_close(img), 0);
	img = open_img(path_in("st.vmdk"), IMG_OPEN_RDONLY);
	cr_assert_eq(img_pread(img, r, 1 << 20, 1 << 20), 0);
	cr_expect_eq(memcmp(buf, r, 1 << 20), 0);
	cr_assert_eq(img_pread(img, r, 1001 * 512, 3 << 20), 0);
	cr_expect_eq(memcmp(buf, r, 1000 * 512), 0);
	cr_expect_eq(memcmp(buf, r + 1000 * 512, 512), 0);
	img_close(img);
	/* random writes are refused on an existing stream */
	cr_assert_eq(img_open(&img, path_in("st.vmdk"), &o, err, sizeof(err)),
		     0);
	cr_expect_eq(img_pwrite(img, buf, 512, 0), -ENOTSUP);
	cr_expect_not_null(strstr(img_errmsg(img), "convert"));
	img_close(img);
	free(buf);
	free(r);
}

static void corrupt(const char *path, uint64_t off, const void *bytes,
		    size_t len)
{
	int fd = open(path, O_WRONLY);

	cr_assert_geq(fd, 0);
	cr_assert_eq(pwrite(fd, bytes, len, (off_t)off), (ssize_t)len);
	close(fd);
}

static uint32_t read_u32(const char *path, uint64_t off)
{
	uint32_t v;
	int fd = open(path, O_RDONLY);

	cr_assert_eq(pread(fd, &v, 4, (off_t)off), 4);
	close(fd);
	return IMG_LE32(v);
}

static void run_check(const char *path, unsigned fix,
		      struct img_check_result *res)
{
	struct img *img =
		open_img(path, IMG_OPEN_CHECK | (fix ? IMG_OPEN_RDWR : 0));

	memset(res, 0, sizeof(*res));
	cr_assert_eq(img_check(img, res, fix), 0, "%s", img_errmsg(img));
	img_close(img);
}

Test(vmdk_img, check_finds_and_repairs)
{
	struct img_check_result res;
	struct img *img;
	uint8_t buf[65536 * 2];
	uint32_t gd, gt, v;
	const char *p = path_in("c.vmdk");

	create(p, 4 << 20, NULL, NULL);
	img = open_img(p, IMG_OPEN_RDWR);
	fill(buf, sizeof(buf), 9);
	cr_assert_eq(img_pwrite(img, buf, sizeof(buf), 0), 0);
	img_close(img);
	run_check(p, 0, &res);
	cr_expect_eq(res.corruptions, 0);
	cr_expect_eq(res.leaks, 0);
	cr_expect_eq(res.allocated_clusters, 2);

	/* grain table entry 1 points at entry 0's grain: overlap */
	gd = read_u32(p, 56);
	gt = read_u32(p, (uint64_t)gd * 512);
	v = IMG_LE32(read_u32(p, (uint64_t)gt * 512));
	corrupt(p, (uint64_t)gt * 512 + 4, &v, 4);
	run_check(p, 0, &res);
	cr_expect_geq(res.corruptions, 1);
	run_check(p, IMG_CHECK_FIX_ERRORS | IMG_CHECK_FIX_LEAKS, &res);
	cr_expect_geq(res.corruptions_fixed, 1);
	run_check(p, 0, &res);
	cr_expect_eq(res.corruptions, 0, "%s", res.messages[0]);

	/* redundant directory entry changed */
	v = IMG_LE32(3);
	corrupt(p, (uint64_t)read_u32(p, 48) * 512, &v, 4);
	run_check(p, 0, &res);
	cr_expect_geq(res.corruptions, 1);
	run_check(p, IMG_CHECK_FIX_ERRORS, &res);
	run_check(p, 0, &res);
	cr_expect_eq(res.corruptions, 0, "%s", res.messages[0]);

	/* leaked space at the end */
	{
		int fd = open(p, O_WRONLY);

		cr_assert_eq(ftruncate(fd, (off_t)file_size(p) + 65536 * 3), 0);
		close(fd);
	}
	run_check(p, 0, &res);
	cr_expect_eq(res.leaks, 3, "%s", res.messages[0]);
	run_check(p, IMG_CHECK_FIX_LEAKS, &res);
	cr_expect_eq(res.leaks_fixed, 3);
	run_check(p, 0, &res);
	cr_expect_eq(res.leaks, 0);
	img = open_img(p, IMG_OPEN_RDONLY);
	cr_assert_eq(img_pread(img, buf + 65536, 65536, 0), 0);
	fill(buf, 65536, 9);
	cr_expect_eq(memcmp(buf, buf + 65536, 65536), 0);
	img_close(img);
}

Test(vmdk_img, bad_inputs_refused_with_one_line)
{
	struct img_open_options o = { .format = "vmdk",
				      .flags = IMG_OPEN_RDWR };
	struct img *img;
	const char *p = path_in("b.vmdk");
	uint64_t v64;
	uint32_t v32;
	int fd;

#define REFUSED(needle)                                                    \
	do {                                                               \
		err[0] = '\0';                                             \
		cr_expect_neq(img_open(&img, p, &o, err, sizeof(err)), 0); \
		cr_expect_not_null(strstr(err, needle), "%s", err);        \
		cr_expect_null(strchr(err, '\n'));                         \
	} while (0)

	/* bad magic, but told it is a VMDK */
	fd = open(p, O_CREAT | O_TRUNC | O_WRONLY, 0644);
	cr_assert_eq(write(fd, "KDMX\1\0\0\0", 8), 8);
	close(fd);
	REFUSED("descriptor");
	/* grain size zero */
	create(p, 1 << 20, NULL, NULL);
	v64 = 0;
	corrupt(p, 20, &v64, 8);
	REFUSED("grainSize");
	/* grain directory past the end */
	create(p, 1 << 20, NULL, NULL);
	v64 = IMG_LE64(1u << 30);
	corrupt(p, 56, &v64, 8);
	REFUSED("grain directory");
	/* grain table pointer past the end */
	create(p, 1 << 20, NULL, NULL);
	v32 = IMG_LE32(1u << 30);
	corrupt(p, (uint64_t)read_u32(p, 56) * 512, &v32, 4);
	REFUSED("past the end");
	/* descriptor garbage in a monolithic file */
	create(p, 1 << 20, NULL, NULL);
	corrupt(p, 512 + 22, "\x01\x02", 2);
	REFUSED("control character");
	/* header capacity smaller than the descriptor's extent */
	create(p, 1 << 20, NULL, NULL);
	v64 = IMG_LE64(1024);
	corrupt(p, 12, &v64, 8);
	REFUSED("capacity");
	/* split set with an extent missing */
	create(path_in("m.vmdk"), 3ull << 30, "twoGbMaxExtentSparse", NULL);
	cr_assert_eq(unlink(path_in("m-s002.vmdk")), 0);
	p = path_in("m.vmdk");
	REFUSED("m-s002.vmdk");
	/* seSparse extent without a descriptor */
	p = path_in("se.vmdk");
	v32 = IMG_LE32(VMDK_SESPARSE_MAGIC);
	fd = open(p, O_CREAT | O_TRUNC | O_WRONLY, 0644);
	cr_assert_eq(write(fd, &v32, 4), 4);
	close(fd);
	REFUSED("seSparse");
#undef REFUSED
}

Test(vmdk_img, resize_grows_sparse_and_relocates_directory)
{
	struct img *img;
	uint8_t w[512], r[512];
	struct img_check_result res;
	const char *p = path_in("g.vmdk");

	create(p, 1 << 20, NULL, NULL);
	img = open_img(p, IMG_OPEN_RDWR);
	fill(w, sizeof(w), 4);
	cr_assert_eq(img_pwrite(img, w, 512, 4096), 0);
	/* 1 MiB -> 20 GiB needs 640 directory entries: more than fit */
	cr_assert_eq(img_resize(img, 20ull << 30, 0), 0, "%s", img_errmsg(img));
	cr_expect_eq(img_size(img), 20ull << 30);
	cr_assert_eq(img_pwrite(img, w, 512, (20ull << 30) - 512), 0);
	cr_expect_neq(img_resize(img, 1 << 20, 0), 0);
	img_close(img);
	img = open_img(p, IMG_OPEN_RDONLY);
	cr_expect_eq(img_size(img), 20ull << 30);
	cr_assert_eq(img_pread(img, r, 512, 4096), 0);
	cr_expect_eq(memcmp(w, r, 512), 0);
	cr_assert_eq(img_pread(img, r, 512, (20ull << 30) - 512), 0);
	cr_expect_eq(memcmp(w, r, 512), 0);
	img_close(img);
	run_check(p, 0, &res);
	cr_expect_eq(res.corruptions, 0);
	cr_expect_eq(res.leaks, 0, "%s", res.messages[0]);
}

Test(vmdk_img, create_options_validated)
{
	struct img_create_options o = { .format = "vmdk", .size = 1 << 20 };

	o.subformat = "monolithicBogus";
	cr_expect_neq(img_create(path_in("x.vmdk"), &o, err, sizeof(err)), 0);
	cr_expect_not_null(strstr(err, "subformat"));
	o.subformat = NULL;
	o.options = "adapter_type=scsi";
	cr_expect_neq(img_create(path_in("x.vmdk"), &o, err, sizeof(err)), 0);
	cr_expect_not_null(strstr(err, "adapter_type"));
	o.options = "adapter_type=lsilogic,hwversion=7";
	cr_assert_eq(img_create(path_in("x.vmdk"), &o, err, sizeof(err)), 0,
		     "%s", err);
	o.options = NULL;
	o.cluster_size = 3000;
	cr_expect_neq(img_create(path_in("y.vmdk"), &o, err, sizeof(err)), 0);
	cr_expect_not_null(strstr(err, "grain size"));
}

/* An ESX "COWD" (vmfsSparse) extent built by hand: 2 MiB, 4 KiB grains,
 * one grain allocated. */
Test(vmdk_img, reads_cowd_vmfs_sparse_extent)
{
	struct vmdk_cowd_header h = { 0 };
	uint8_t grain[4096], r[16384];
	uint32_t gd, gte;
	struct img *img;
	const char *p = path_in("cowd.vmdk");
	int fd;

	h.magic = VMDK_COWD_MAGIC;
	h.version = 1;
	h.flags = 3;
	h.capacity = 4096;
	h.grain_size = 8;
	h.gd_offset = 4;
	h.num_gd_entries = 1;
	h.free_sector = 45;
	vmdk_cowd_header_to_cpu(&h); /* to disk order (its own inverse) */
	fd = open(p, O_CREAT | O_TRUNC | O_RDWR, 0644);
	cr_assert_geq(fd, 0);
	cr_assert_eq(pwrite(fd, &h, sizeof(h), 0), (ssize_t)sizeof(h));
	gd = IMG_LE32(5);
	cr_assert_eq(pwrite(fd, &gd, 4, 4 * 512), 4);
	gte = IMG_LE32(37);
	cr_assert_eq(pwrite(fd, &gte, 4, 5 * 512 + 3 * 4), 4);
	fill(grain, sizeof(grain), 77);
	cr_assert_eq(pwrite(fd, grain, sizeof(grain), 37 * 512),
		     (ssize_t)sizeof(grain));
	close(fd);
	img = open_img(p, IMG_OPEN_RDONLY);
	cr_expect_eq(img_size(img), 2 << 20);
	cr_assert_eq(img_pread(img, r, sizeof(r), 0), 0, "%s", img_errmsg(img));
	cr_expect(img_buf_is_zero(r, 3 * 4096));
	cr_expect_eq(memcmp(r + 3 * 4096, grain, 4096), 0);
	img_close(img);
}

Test(vmdk_img, check_repairs_capacity_below_descriptor)
{
	struct img_check_result res;
	struct img *img;
	uint64_t v64 = IMG_LE64(1024);
	uint8_t w[512], r[512];
	const char *p = path_in("cap.vmdk");

	create(p, 4 << 20, NULL, NULL);
	corrupt(p, 12, &v64, 8);
	run_check(p, 0, &res);
	cr_expect_eq(res.corruptions, 1);
	cr_expect_not_null(strstr(res.messages[0], "capacity"));
	run_check(p, IMG_CHECK_FIX_ERRORS, &res);
	cr_expect_eq(res.corruptions_fixed, 1);
	run_check(p, 0, &res);
	cr_expect_eq(res.corruptions, 0);
	img = open_img(p, IMG_OPEN_RDWR);
	fill(w, sizeof(w), 5);
	cr_assert_eq(img_pwrite(img, w, 512, (4 << 20) - 512), 0);
	cr_assert_eq(img_pread(img, r, 512, (4 << 20) - 512), 0);
	cr_expect_eq(memcmp(w, r, 512), 0);
	img_close(img);
}

struct reader_arg {
	struct img *img;
	unsigned seed;
	int bad;
};

static void *reader(void *opaque)
{
	struct reader_arg *a = opaque;
	uint8_t *buf = malloc(200000), *want = malloc(200000);
	unsigned s = a->seed;
	int i;

	for (i = 0; i < 200 && buf && want; i++) {
		uint64_t off;

		s = s * 1103515245 + 12345;
		off = (uint64_t)(s % ((32u << 20) - 200000)) & ~511ull;
		if (img_pread(a->img, buf, 200000, off)) {
			if (getenv("VMDK_SERIAL"))
				fprintf(stderr, "read error %s\n",
					img_errmsg(a->img));
			a->bad++;
			continue;
		}
		/* the image holds byte (offset / 512) & 0xff + 1 everywhere
		 * in [0, 32 MiB) */
		for (size_t j = 0; j < 200000; j++)
			want[j] = (uint8_t)(((off + j) >> 9) + 1);
		if (memcmp(buf, want, 200000)) {
			if (getenv("VMDK_SERIAL")) {
				size_t q = 0;

				while (buf[q] == want[q])
					q++;
				fprintf(stderr, "mismatch off %llu+%zu\n",
					(unsigned long long)off, q);
			}
			a->bad++;
		}
	}
	free(buf);
	free(want);
	return NULL;
}

/* Reads from several threads at once, grain tables loaded lazily. */
Test(vmdk_img, concurrent_reads)
{
	static const char *subs[] = { "monolithicSparse", "streamOptimized" };
	uint8_t *buf = malloc(1 << 20);
	pthread_t t[4];
	struct reader_arg a[4];
	size_t k, j;
	int i;

	cr_assert_not_null(buf);
	for (k = 0; k < 2; k++) {
		const char *p = path_in(k ? "cr1.vmdk" : "cr0.vmdk");
		struct img *img;

		create(p, 32 << 20, subs[k], NULL);
		img = open_img(p, IMG_OPEN_RDWR | IMG_OPEN_SEQUENTIAL);
		for (i = 0; i < 32; i++) {
			for (j = 0; j < (1 << 20); j++)
				buf[j] = (uint8_t)(((((uint64_t)i << 20) + j) >>
						    9) +
						   1);
			cr_assert_eq(img_pwrite(img, buf, 1 << 20,
						(uint64_t)i << 20),
				     0);
		}
		cr_assert_eq(img_close(img), 0);
		img = open_img(p, IMG_OPEN_RDONLY);
		for (i = 0; i < 4; i++) {
			a[i] = (struct reader_arg){ img, (unsigned)i * 7 + 1,
						    0 };
			if (getenv("VMDK_SERIAL"))
				reader(&a[i]);
			else
				cr_assert_eq(pthread_create(&t[i], NULL, reader,
							    &a[i]),
					     0);
		}
		for (i = 0; i < 4; i++) {
			if (!getenv("VMDK_SERIAL"))
				pthread_join(t[i], NULL);
			cr_expect_eq(a[i].bad, 0, "%s thread %d", subs[k], i);
		}
		img_close(img);
	}
	free(buf);
}

Test(vmdk_img, creates_vmfs_and_zeroed_grain_variants)
{
	struct img_create_options o = { .format = "vmdk",
					.size = 1 << 20,
					.subformat = "vmfs" };
	struct img *img;
	uint8_t r[512];

	cr_assert_eq(img_create(path_in("v.vmdk"), &o, err, sizeof(err)), 0,
		     "%s", err);
	cr_expect_eq(file_size(path_in("v-flat.vmdk")), 1 << 20);
	img = open_img(path_in("v.vmdk"), IMG_OPEN_RDONLY);
	cr_expect_eq(img_size(img), 1 << 20);
	img_close(img);
	/* zeroed_grain: zeroing over a parent stores "zero" entries */
	create(path_in("zp.vmdk"), 1 << 20, NULL, NULL);
	img = open_img(path_in("zp.vmdk"), IMG_OPEN_RDWR);
	memset(r, 0x77, sizeof(r));
	cr_assert_eq(img_pwrite(img, r, 512, 0), 0);
	img_close(img);
	o = (struct img_create_options){ .format = "vmdk",
					 .backing_file = "zp.vmdk",
					 .options = "zeroed_grain=on" };
	cr_assert_eq(img_create(path_in("zc.vmdk"), &o, err, sizeof(err)), 0,
		     "%s", err);
	img = open_img(path_in("zc.vmdk"), IMG_OPEN_RDWR);
	cr_assert_eq(img_write_zeroes(img, 0, 65536, 0), 0);
	cr_assert_eq(img_pread(img, r, 512, 0), 0);
	cr_expect(img_buf_is_zero(r, 512));
	img_close(img);
	cr_expect_eq(file_size(path_in("zc.vmdk")), 65536,
		     "zero grain took space");
}
