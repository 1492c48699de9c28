/* SPDX-License-Identifier: MIT */
/* VDI driver: header codec, validation, block map, allocation order,
 * growth, check/repair and bad input. */
#include "formats/vdi/vdi_ondisk.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MiB (1u << 20)

#define TMPDIR_PREFIX "/tmp/test_vdi"
#include "unit_tmpdir.h"

/* ---- pure codec and validation ------------------------------------------*/

static struct vdi_header valid_header(void)
{
	struct vdi_header h;
	char msg[256];

	cr_assert_eq(vdi_header_init(&h, 64ull * MiB, MiB, VDI_TYPE_NORMAL, msg,
				     sizeof(msg)),
		     0);
	return h;
}

Test(vdi_header, encode_puts_fields_at_virtualbox_offsets)
{
	struct vdi_header h = valid_header();
	struct vdi_header_disk d;
	const uint8_t *b = (const uint8_t *)&d;
	uint32_t v32;
	uint64_t v64;

	vdi_header_encode(&d, &h);
	cr_assert(!memcmp(b, "<<< Oracle VM VirtualBox Disk Image >>>\n", 40));
	memcpy(&v32, b + 64, 4);
	cr_assert_eq(IMG_LE32(v32), 0xbeda107fu);
	memcpy(&v32, b + 68, 4);
	cr_assert_eq(IMG_LE32(v32), 0x00010001u);
	memcpy(&v32, b + 72, 4);
	cr_assert_eq(IMG_LE32(v32), 0x190u);
	memcpy(&v32, b + 76, 4);
	cr_assert_eq(IMG_LE32(v32), 1u);
	memcpy(&v32, b + 0x154, 4);
	cr_assert_eq(IMG_LE32(v32), MiB);
	memcpy(&v32, b + 0x158, 4);
	cr_assert_eq(IMG_LE32(v32), 2 * MiB);
	memcpy(&v64, b + 0x170, 8);
	cr_assert_eq(IMG_LE64(v64), 64ull * MiB);
	memcpy(&v32, b + 0x178, 4);
	cr_assert_eq(IMG_LE32(v32), MiB);
	memcpy(&v32, b + 0x180, 4);
	cr_assert_eq(IMG_LE32(v32), 64u);
	memcpy(&v32, b + 0x1d4, 4); /* LCHS sector size */
	cr_assert_eq(IMG_LE32(v32), 512u);
}

Test(vdi_header, decode_inverts_encode)
{
	struct vdi_header h = valid_header(), back;
	struct vdi_header_disk d;

	h.lchs_cylinders = 1024;
	h.lchs_heads = 16;
	h.lchs_sectors = 63;
	h.blocks_allocated = 7;
	snprintf(h.description, sizeof(h.description), "a test disk");
	vdi_header_encode(&d, &h);
	vdi_header_decode(&back, &d);
	cr_assert(!memcmp(&h, &back, sizeof(h)));
}

Test(vdi_header, short_header_has_no_lchs)
{
	struct vdi_header h = valid_header(), back;
	struct vdi_header_disk d;

	h.lchs_cylinders = 99;
	vdi_header_encode(&d, &h);
	d.header_size = IMG_LE32(VDI_HEADER1_SIZE);
	vdi_header_decode(&back, &d);
	cr_assert_eq(back.header_size, VDI_HEADER1_SIZE);
	cr_assert_eq(back.lchs_cylinders, 0);
}

Test(vdi_header, init_layout)
{
	struct vdi_header h;
	char msg[256];

	/* 300 MiB + 3 sectors: 301 blocks, size kept exact */
	cr_assert_eq(vdi_header_init(&h, 300ull * MiB + 1536, MiB,
				     VDI_TYPE_FIXED, msg, sizeof(msg)),
		     0);
	cr_assert_eq(h.disk_size, 300ull * MiB + 1536);
	cr_assert_eq(h.blocks_in_image, 301);
	cr_assert_eq(h.blocks_allocated, 301);
	cr_assert_eq(h.offset_bmap % MiB, 0);
	cr_assert_eq(h.offset_data % MiB, 0);
	cr_assert_geq(h.offset_data, h.offset_bmap + 301 * 4);
	cr_assert_eq(h.image_type, VDI_TYPE_FIXED);
	/* sizes round up to a sector only */
	cr_assert_eq(vdi_header_init(&h, 1000, MiB, VDI_TYPE_NORMAL, msg,
				     sizeof(msg)),
		     0);
	cr_assert_eq(h.disk_size, 1024);
	cr_assert_eq(h.blocks_in_image, 1);
	/* a map bigger than 1 MiB pushes the data further */
	cr_assert_eq(vdi_header_init(&h, 2048ull * MiB, 4096, VDI_TYPE_NORMAL,
				     msg, sizeof(msg)),
		     0);
	cr_assert_eq(h.blocks_in_image, 524288);
	cr_assert_eq(h.offset_data, 3 * MiB);
	cr_assert_eq(vdi_header_validate(&h, h.offset_data, msg, sizeof(msg)),
		     0, "%s", msg);
}

Test(vdi_header, init_rejects_bad_block_size_and_huge_sizes)
{
	struct vdi_header h;
	char msg[256];

	cr_assert_eq(vdi_header_init(&h, MiB, 3000, VDI_TYPE_NORMAL, msg,
				     sizeof(msg)),
		     -EINVAL);
	cr_assert(strstr(msg, "block size"));
	cr_assert_eq(vdi_header_init(&h, MiB, 256, VDI_TYPE_NORMAL, msg,
				     sizeof(msg)),
		     -EINVAL);
	cr_assert_eq(vdi_header_init(&h, UINT64_MAX - 10, MiB, VDI_TYPE_NORMAL,
				     msg, sizeof(msg)),
		     -EFBIG);
	cr_assert_eq(vdi_header_init(&h, 1ull << 52, 4096, VDI_TYPE_NORMAL, msg,
				     sizeof(msg)),
		     -EFBIG);
}

Test(vdi_header, uuid_text_and_version)
{
	/* GUID {01234567-89ab-cdef-0011-223344556677} as VirtualBox stores
	 * it: first three fields little-endian. */
	const uint8_t disk[16] = { 0x67, 0x45, 0x23, 0x01, 0xab, 0x89,
				   0xef, 0xcd, 0x00, 0x11, 0x22, 0x33,
				   0x44, 0x55, 0x66, 0x77 };
	uint8_t u[16];
	char text[37];

	vdi_uuid_to_text(disk, text);
	cr_assert_str_eq(text, "01234567-89ab-cdef-0011-223344556677");
	vdi_uuid_generate(u);
	vdi_uuid_to_text(u, text);
	cr_assert_eq(text[14], '4');
	cr_assert(strchr("89ab", text[19]));
	cr_assert(!vdi_uuid_is_null(u));
}

struct bad_case {
	const char *name;
	void (*mutate)(struct vdi_header *h, uint64_t *file_size);
	const char *needle;
};

static void bad_signature(struct vdi_header *h, uint64_t *fs)
{
	(void)fs;
	h->signature = 0x12345678;
}
static void truncated(struct vdi_header *h, uint64_t *fs)
{
	(void)h;
	*fs = 200;
}
static void tiny_file(struct vdi_header *h, uint64_t *fs)
{
	(void)h;
	*fs = 10;
}
static void bad_version(struct vdi_header *h, uint64_t *fs)
{
	(void)fs;
	h->version = 0x00020000;
}
static void bad_header_size(struct vdi_header *h, uint64_t *fs)
{
	(void)fs;
	h->header_size = 12;
}
static void bad_type(struct vdi_header *h, uint64_t *fs)
{
	(void)fs;
	h->image_type = 9;
}
static void undo_type(struct vdi_header *h, uint64_t *fs)
{
	(void)fs;
	h->image_type = VDI_TYPE_UNDO;
}
static void bad_sector_size(struct vdi_header *h, uint64_t *fs)
{
	(void)fs;
	h->sector_size = 4096;
}
static void block_not_pow2(struct vdi_header *h, uint64_t *fs)
{
	(void)fs;
	h->block_size = 3 * MiB;
}
static void block_extra_odd(struct vdi_header *h, uint64_t *fs)
{
	(void)fs;
	h->block_extra = 100;
}
static void size_not_sector(struct vdi_header *h, uint64_t *fs)
{
	(void)fs;
	h->disk_size += 1;
}
static void size_beyond_blocks(struct vdi_header *h, uint64_t *fs)
{
	(void)fs;
	h->disk_size = 65ull * MiB;
}
static void absurd_blocks(struct vdi_header *h, uint64_t *fs)
{
	(void)fs;
	h->blocks_in_image = 0xfffffff0u;
}
static void bmap_in_header(struct vdi_header *h, uint64_t *fs)
{
	(void)fs;
	h->offset_bmap = 100;
}
static void data_over_bmap(struct vdi_header *h, uint64_t *fs)
{
	(void)fs;
	h->offset_data = h->offset_bmap + 8;
}
static void bmap_past_eof(struct vdi_header *h, uint64_t *fs)
{
	(void)h;
	*fs = MiB + 100;
}
static void diff_without_parent(struct vdi_header *h, uint64_t *fs)
{
	(void)fs;
	h->image_type = VDI_TYPE_DIFF;
}

static const struct bad_case bad_cases[] = {
	{ "signature", bad_signature, "signature" },
	{ "truncated", truncated, "truncated header" },
	{ "tiny", tiny_file, "truncated header" },
	{ "version", bad_version, "version" },
	{ "header size", bad_header_size, "header size" },
	{ "type", bad_type, "image type" },
	{ "undo", undo_type, "undo" },
	{ "sector size", bad_sector_size, "sector size" },
	{ "block size", block_not_pow2, "block size" },
	{ "block extra", block_extra_odd, "block extra" },
	{ "disk size", size_not_sector, "disk size" },
	{ "disk size blocks", size_beyond_blocks, "exceeds" },
	{ "block count", absurd_blocks, "block count" },
	{ "bmap offset", bmap_in_header, "block map offset" },
	{ "data offset", data_over_bmap, "data offset" },
	{ "bmap eof", bmap_past_eof, "past the end of file" },
	{ "diff parent", diff_without_parent, "parent UUID" },
};

Test(vdi_header, validate_names_each_bad_field)
{
	char msg[256];
	struct vdi_header good = valid_header();

	cr_assert_eq(vdi_header_validate(&good, 2 * MiB, msg, sizeof(msg)), 0,
		     "%s", msg);
	for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
		struct vdi_header h = valid_header();
		uint64_t fs = 2 * MiB;

		bad_cases[i].mutate(&h, &fs);
		msg[0] = '\0';
		cr_assert_lt(vdi_header_validate(&h, fs, msg, sizeof(msg)), 0,
			     "case %s accepted", bad_cases[i].name);
		cr_assert(strstr(msg, bad_cases[i].needle),
			  "case %s: message '%s' lacks '%s'", bad_cases[i].name,
			  msg, bad_cases[i].needle);
	}
}

/* ---- through libimg ------------------------------------------------------*/

static struct img *open_rw(const char *path, unsigned extra)
{
	struct img_open_options o = { .format = NULL,
				      .flags = IMG_OPEN_RDWR | extra };
	char err[IMG_ERRMSG_MAX];
	struct img *img = NULL;

	cr_assert_eq(img_open(&img, path, &o, err, sizeof(err)), 0, "%s", err);
	return img;
}

static void create_vdi(const char *path, uint64_t size, const char *sub,
		       uint32_t bs)
{
	struct img_create_options o = { .format = "vdi",
					.size = size,
					.subformat = sub,
					.cluster_size = bs };
	char err[IMG_ERRMSG_MAX];

	cr_assert_eq(img_create(path, &o, err, sizeof(err)), 0, "%s", err);
}

static void read_header(const char *path, struct vdi_header *h)
{
	struct vdi_header_disk d;
	int fd = open(path, O_RDONLY);

	cr_assert_geq(fd, 0);
	cr_assert_eq(pread(fd, &d, sizeof(d), 0), (ssize_t)sizeof(d));
	close(fd);
	vdi_header_decode(h, &d);
}

static uint32_t read_entry(const char *path, uint32_t block)
{
	struct vdi_header h;
	uint32_t e;
	int fd;

	read_header(path, &h);
	fd = open(path, O_RDONLY);
	cr_assert_eq(pread(fd, &e, 4, h.offset_bmap + block * 4ull), 4);
	close(fd);
	return IMG_LE32(e);
}

static void write_entry(const char *path, uint32_t block, uint32_t entry)
{
	struct vdi_header h;
	uint32_t e = IMG_LE32(entry);
	int fd;

	read_header(path, &h);
	fd = open(path, O_WRONLY);
	cr_assert_eq(pwrite(fd, &e, 4, h.offset_bmap + block * 4ull), 4);
	close(fd);
}

static void write_header(const char *path, const struct vdi_header *h)
{
	struct vdi_header_disk d;
	int fd = open(path, O_WRONLY);

	vdi_header_encode(&d, h);
	cr_assert_eq(pwrite(fd, &d, sizeof(d), 0), (ssize_t)sizeof(d));
	close(fd);
}

static uint64_t file_size(const char *path)
{
	struct stat st;

	cr_assert_eq(stat(path, &st), 0);
	return (uint64_t)st.st_size;
}

static void fill(uint8_t *buf, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (uint8_t)(seed * 131 + i * 7 + (i >> 9));
}

TestSuite(vdi_io, .init = make_tmpdir, .fini = remove_tmpdir);

Test(vdi_io, allocation_appends_in_write_order)
{
	const char *p = tmp_path("a.vdi");
	static uint8_t buf[MiB], back[MiB];
	struct vdi_header h;
	struct img *img;

	create_vdi(p, 16 * MiB, NULL, 0);
	read_header(p, &h);
	cr_assert_eq(file_size(p), h.offset_data);
	img = open_rw(p, 0);
	fill(buf, MiB, 1);
	cr_assert_eq(img_pwrite(img, buf, MiB, 5ull * MiB), 0);
	fill(buf, 4096, 2);
	cr_assert_eq(img_pwrite(img, buf, 4096, 2ull * MiB + 8192), 0);
	/* zeros over an unallocated block allocate nothing */
	memset(buf, 0, MiB);
	cr_assert_eq(img_pwrite(img, buf, MiB, 9ull * MiB), 0);
	cr_assert_eq(img_pwrite(img, buf, 512, 10ull * MiB + 512), 0);
	cr_assert_eq(img_close(img), 0);

	read_header(p, &h);
	cr_assert_eq(h.blocks_allocated, 2);
	cr_assert_eq(read_entry(p, 5), 0);
	cr_assert_eq(read_entry(p, 2), 1);
	cr_assert_eq(read_entry(p, 9), VDI_BLOCK_FREE);
	cr_assert_eq(read_entry(p, 10), VDI_BLOCK_FREE);
	cr_assert_eq(file_size(p), h.offset_data + 2ull * MiB);

	/* the data of block 2 is at slot 1, zero-filled around the write */
	{
		int fd = open(p, O_RDONLY);

		cr_assert_eq(pread(fd, back, MiB, h.offset_data + MiB),
			     (ssize_t)MiB);
		close(fd);
	}
	fill(buf, 4096, 2);
	cr_assert(!memcmp(back + 8192, buf, 4096));
	cr_assert(img_buf_is_zero(back, 8192));
	cr_assert(img_buf_is_zero(back + 8192 + 4096, MiB - 8192 - 4096));
}

/* IMG_OPEN_DIRECT (what convert opens its target with): aligned whole
 * blocks bypass the page cache, partial writes and metadata do not, and
 * the two paths see each other's data before and after a reopen. */
Test(vdi_io, direct_and_cached_writes_agree)
{
	const char *p = tmp_path("d.vdi");
	uint8_t *buf = aligned_alloc(4096, 3 * MiB), *back;
	struct img *img;

	cr_assert_not_null(buf);
	back = aligned_alloc(4096, 3 * MiB);
	cr_assert_not_null(back);
	create_vdi(p, 16 * MiB, NULL, 0);
	img = open_rw(p, IMG_OPEN_DIRECT);
	fill(buf, 3 * MiB, 3);
	cr_assert_eq(img_pwrite(img, buf, 3 * MiB, 4ull * MiB), 0);
	/* unaligned, inside an allocated block and into a new one */
	fill(buf, 1000, 4);
	cr_assert_eq(img_pwrite(img, buf, 1000, 5ull * MiB + 77), 0);
	cr_assert_eq(img_pwrite(img, buf, 1000, 9ull * MiB + 4095), 0);
	cr_assert_eq(img_pread(img, back, 3 * MiB, 4ull * MiB), 0);
	fill(buf, 3 * MiB, 3);
	fill(buf + MiB + 77, 1000, 4);
	cr_assert(!memcmp(back, buf, 3 * MiB));
	cr_assert_eq(img_close(img), 0);

	img = open_rw(p, 0);
	cr_assert_eq(img_pread(img, back, 3 * MiB, 4ull * MiB), 0);
	cr_assert(!memcmp(back, buf, 3 * MiB));
	cr_assert_eq(img_pread(img, back, 4096, 9ull * MiB), 0);
	fill(buf, 1000, 4);
	cr_assert(img_buf_is_zero(back, 4095));
	cr_assert(!memcmp(back + 4095, buf, 1));
	cr_assert_eq(img_close(img), 0);
	free(buf);
	free(back);
}

Test(vdi_io, block_status_and_fixed_subformat)
{
	const char *p = tmp_path("f.vdi");
	struct img_extent ext;
	struct vdi_header h;
	struct img *img;

	create_vdi(p, 3 * MiB + 1536, "fixed", 0);
	read_header(p, &h);
	cr_assert_eq(h.image_type, VDI_TYPE_FIXED);
	cr_assert_eq(h.blocks_allocated, 4);
	cr_assert_eq(file_size(p), h.offset_data + 4ull * MiB);
	for (uint32_t b = 0; b < 4; b++)
		cr_assert_eq(read_entry(p, b), b);
	img = open_rw(p, 0);
	cr_assert_eq(img_size(img), 3 * MiB + 1536);
	cr_assert_eq(img_block_status_layer(img, 0, img_size(img), &ext), 0);
	cr_assert(ext.flags & IMG_EXTENT_DATA);
	cr_assert_eq(ext.depth, 0);
	cr_assert_eq(ext.length, img_size(img)); /* slots are contiguous */
	cr_assert_eq(ext.file_offset, (int64_t)h.offset_data);
	/* discard keeps a fixed image's blocks */
	cr_assert_eq(img_discard(img, 0, 2 * MiB), 0);
	cr_assert_eq(img_close(img), 0);
	cr_assert_eq(file_size(p), h.offset_data + 4ull * MiB);
	cr_assert_eq(read_entry(p, 0), 0);
}

Test(vdi_io, discard_frees_and_compacts)
{
	const char *p = tmp_path("d.vdi");
	static uint8_t buf[4 * MiB], back[4 * MiB];
	struct vdi_header h;
	struct img *img;

	create_vdi(p, 4 * MiB, NULL, 0);
	img = open_rw(p, 0);
	fill(buf, sizeof(buf), 3);
	cr_assert_eq(img_pwrite(img, buf, sizeof(buf), 0), 0);
	cr_assert_eq(img_flush(img), 0);
	/* a partial block is not freed; the whole block 1 is */
	cr_assert_eq(img_discard(img, MiB - 4096, MiB + 4096), 0);
	memset(buf + MiB, 0, MiB);
	cr_assert_eq(img_pread(img, back, sizeof(back), 0), 0);
	cr_assert(!memcmp(back, buf, sizeof(buf)));
	cr_assert_eq(img_close(img), 0);
	read_header(p, &h);
	cr_assert_eq(h.blocks_allocated, 3);
	cr_assert_eq(read_entry(p, 1), VDI_BLOCK_FREE);
	/* the last slot moved into the hole, the file shrank */
	cr_assert_eq(read_entry(p, 3), 1);
	cr_assert_eq(file_size(p), h.offset_data + 3ull * MiB);
	img = open_rw(p, 0);
	cr_assert_eq(img_pread(img, back, sizeof(back), 0), 0);
	cr_assert(!memcmp(back, buf, sizeof(buf)));
	/* write_zeroes with MAY_UNMAP frees whole blocks too */
	cr_assert_eq(img_write_zeroes(img, 0, 2 * MiB, IMG_ZERO_MAY_UNMAP), 0);
	cr_assert_eq(img_close(img), 0);
	read_header(p, &h);
	cr_assert_eq(h.blocks_allocated, 2);
	cr_assert_eq(file_size(p), h.offset_data + 2ull * MiB);
}

/* A qemu-style layout with no room to grow the map: header, map at 512,
 * data right after. */
static void make_tight_image(const char *p, uint32_t blocks, uint32_t nalloc)
{
	struct vdi_header h;
	char msg[256];
	int fd;

	cr_assert_eq(vdi_header_init(&h, (uint64_t)blocks * MiB, MiB,
				     VDI_TYPE_NORMAL, msg, sizeof(msg)),
		     0);
	h.header_size = VDI_HEADER1_SIZE;
	h.offset_bmap = 512;
	h.offset_data = 1024;
	h.blocks_allocated = nalloc;
	fd = open(p, O_RDWR | O_CREAT | O_TRUNC, 0644);
	cr_assert_geq(fd, 0);
	cr_assert_eq(ftruncate(fd, 1024 + (off_t)nalloc * MiB), 0);
	close(fd);
	write_header(p, &h);
	for (uint32_t b = 0; b < blocks; b++)
		write_entry(p, b, VDI_BLOCK_FREE);
	/* block b stored in slot nalloc-1-b (reverse order) with a pattern */
	fd = open(p, O_RDWR);
	for (uint32_t b = 0; b < nalloc; b++) {
		static uint8_t buf[MiB];

		fill(buf, MiB, 10 + b);
		cr_assert_eq(pwrite(fd, buf, MiB,
				    1024 + (off_t)(nalloc - 1 - b) * MiB),
			     (ssize_t)MiB);
	}
	close(fd);
	for (uint32_t b = 0; b < nalloc; b++)
		write_entry(p, b, nalloc - 1 - b);
}

Test(vdi_io, grow_moves_data_out_of_the_map_way)
{
	const char *p = tmp_path("g.vdi");
	static uint8_t buf[MiB], back[MiB];
	struct img_check_result res = { 0 };
	struct vdi_header h;
	struct img *img;

	make_tight_image(p, 100, 3);
	img = open_rw(p, 0);
	cr_assert_eq(img_resize(img, 1000ull * MiB, 0), 0);
	cr_assert_eq(img_size(img), 1000ull * MiB);
	for (uint32_t b = 0; b < 3; b++) {
		fill(buf, MiB, 10 + b);
		cr_assert_eq(img_pread(img, back, MiB, (uint64_t)b * MiB), 0);
		cr_assert(!memcmp(buf, back, MiB), "block %u", b);
	}
	cr_assert_eq(img_pread(img, back, MiB, 999ull * MiB), 0);
	cr_assert(img_buf_is_zero(back, MiB));
	fill(buf, MiB, 77);
	cr_assert_eq(img_pwrite(img, buf, MiB, 999ull * MiB), 0);
	cr_assert_eq(img_close(img), 0);

	read_header(p, &h);
	cr_assert_eq(h.blocks_in_image, 1000);
	cr_assert_eq(h.disk_size, 1000ull * MiB);
	cr_assert_geq(h.offset_data, h.offset_bmap + 4000);
	cr_assert_eq(h.blocks_allocated, 4);
	img = open_rw(p, IMG_OPEN_CHECK);
	cr_assert_eq(img_check(img, &res, 0), 0);
	cr_assert_eq(res.corruptions, 0);
	cr_assert_eq(res.leaks, 0, "leaks %llu", (unsigned long long)res.leaks);
	cr_assert_eq(img_pread(img, back, MiB, 999ull * MiB), 0);
	cr_assert(!memcmp(buf, back, MiB));
	cr_assert_eq(img_close(img), 0);
}

Test(vdi_io, shrink_needs_the_flag_and_drops_only_the_tail)
{
	const char *p = tmp_path("s.vdi");
	static uint8_t buf[MiB], back[MiB];
	struct vdi_header h;
	struct img *img;

	make_tight_image(p, 8, 4);
	img = open_rw(p, 0);
	cr_assert_lt(img_resize(img, 2ull * MiB, 0), 0);
	cr_assert_eq(img_resize(img, 2ull * MiB, IMG_RESIZE_SHRINK), 0);
	cr_assert_eq(img_close(img), 0);
	read_header(p, &h);
	cr_assert_eq(h.blocks_in_image, 2);
	cr_assert_eq(h.blocks_allocated, 2);
	cr_assert_eq(file_size(p), 1024 + 2ull * MiB);
	img = open_rw(p, 0);
	for (uint32_t b = 0; b < 2; b++) {
		fill(buf, MiB, 10 + b);
		cr_assert_eq(img_pread(img, back, MiB, (uint64_t)b * MiB), 0);
		cr_assert(!memcmp(buf, back, MiB), "block %u", b);
	}
	cr_assert_eq(img_close(img), 0);
}

Test(vdi_io, check_finds_and_repairs_leaks_and_counts)
{
	const char *p = tmp_path("c.vdi");
	static uint8_t buf[MiB], back[MiB];
	struct img_check_result res = { 0 };
	struct vdi_header h;
	struct img *img;
	int fd;

	make_tight_image(p, 8, 4);
	/* drop block 1's pointer (slot 2 leaks), add a stray slot at the end,
	 * and break the count */
	write_entry(p, 1, VDI_BLOCK_FREE);
	fd = open(p, O_RDWR);
	cr_assert_eq(ftruncate(fd, 1024 + 5 * (off_t)MiB), 0);
	close(fd);
	read_header(p, &h);
	h.blocks_allocated = 6;
	write_header(p, &h);

	img = open_rw(p, IMG_OPEN_CHECK);
	cr_assert_eq(img_check(img, &res, 0), 0);
	/* two leaked slots, and the stale count is leak-class too */
	cr_assert_eq(res.leaks, 3);
	cr_assert_eq(res.corruptions, 0);
	cr_assert_eq(res.allocated_clusters, 3);
	memset(&res, 0, sizeof(res));
	cr_assert_eq(img_check(img, &res, IMG_CHECK_FIX_LEAKS), 0);
	cr_assert_eq(res.leaks_fixed, 3);
	cr_assert_eq(res.corruptions_fixed, 0);
	cr_assert_eq(img_close(img), 0);
	cr_assert_eq(file_size(p), 1024 + 3ull * MiB);
	read_header(p, &h);
	cr_assert_eq(h.blocks_allocated, 3);

	img = open_rw(p, IMG_OPEN_CHECK);
	memset(&res, 0, sizeof(res));
	cr_assert_eq(img_check(img, &res, 0), 0);
	cr_assert_eq(res.leaks + res.corruptions, 0);
	for (uint32_t b = 0; b < 4; b++) {
		if (b == 1)
			continue;
		fill(buf, MiB, 10 + b);
		cr_assert_eq(img_pread(img, back, MiB, (uint64_t)b * MiB), 0);
		cr_assert(!memcmp(buf, back, MiB), "block %u", b);
	}
	cr_assert_eq(img_close(img), 0);
}

Test(vdi_io, check_refuses_shared_slots_and_clears_past_eof)
{
	const char *p = tmp_path("x.vdi");
	struct img_check_result res = { 0 };
	struct img_open_options o = { .flags = IMG_OPEN_RDWR };
	char err[IMG_ERRMSG_MAX];
	struct img *img;

	make_tight_image(p, 8, 2);
	write_entry(p, 6, 900); /* no such slot */
	/* a normal open refuses */
	cr_assert_lt(img_open(&img, p, &o, err, sizeof(err)), 0);
	cr_assert(strstr(err, "past the end of file"), "%s", err);
	write_entry(p, 6, VDI_BLOCK_FREE);
	write_entry(p, 5, 0); /* shares slot 0 with block 1 */
	cr_assert_lt(img_open(&img, p, &o, err, sizeof(err)), 0);
	cr_assert(strstr(err, "shares"), "%s", err);
	write_entry(p, 6, 900);

	img = open_rw(p, IMG_OPEN_CHECK);
	cr_assert_eq(img_check(img, &res,
			       IMG_CHECK_FIX_LEAKS | IMG_CHECK_FIX_ERRORS),
		     0);
	/* past-EOF cleared, shared slot and count reported */
	cr_assert_geq(res.corruptions, 2);
	cr_assert_eq(res.corruptions_fixed, res.corruptions - 1);
	cr_assert_eq(img_close(img), 0);
	cr_assert_eq(read_entry(p, 6), VDI_BLOCK_FREE);
	cr_assert_eq(read_entry(p, 5), 0);
}

Test(vdi_io, bad_input_is_refused_and_never_written)
{
	const char *p = tmp_path("bad.vdi");
	static const struct {
		uint32_t off, value, off2, value2;
		const char *needle;
	} cases[] = {
		{ 64, 0x11111111, 64, 0x11111111, "signature" },
		{ 0x178, 3 * MiB, 0x178, 3 * MiB, "block size" },
		{ 0x180, 0x7fffffff, 0x180, 0x7fffffff, "block count" },
		{ 0x154, 0x7fff0000, 0x158, 0x7fff1000,
		  "past the end of file" },
		{ 0x158, 0x100000, 0x158, 0x100000, "overlaps the block map" },
	};
	struct img_open_options o = { .flags = IMG_OPEN_RDWR };
	char err[IMG_ERRMSG_MAX];
	struct img *img;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct stat before, after;
		uint32_t v = IMG_LE32(cases[i].value);
		uint32_t v2 = IMG_LE32(cases[i].value2);
		int fd;

		create_vdi(p, 4 * MiB, NULL, 0);
		fd = open(p, O_WRONLY);
		cr_assert_eq(pwrite(fd, &v, 4, cases[i].off), 4);
		cr_assert_eq(pwrite(fd, &v2, 4, cases[i].off2), 4);
		close(fd);
		cr_assert_eq(stat(p, &before), 0);
		err[0] = '\0';
		o.format = "vdi";
		cr_assert_lt(img_open(&img, p, &o, err, sizeof(err)), 0);
		cr_assert(strstr(err, cases[i].needle), "case %zu: %s", i, err);
		cr_assert(!strchr(err, '\n'));
		cr_assert_eq(stat(p, &after), 0);
		cr_assert_eq(before.st_size, after.st_size);
		cr_assert_eq(before.st_mtim.tv_nsec, after.st_mtim.tv_nsec);
	}
	/* truncated header */
	{
		int fd = open(p, O_RDWR | O_TRUNC);

		cr_assert_eq(write(fd, "<<< x >>>", 9), 9);
		close(fd);
		o.format = "vdi";
		cr_assert_lt(img_open(&img, p, &o, err, sizeof(err)), 0);
		cr_assert(strstr(err, "truncated"), "%s", err);
	}
}

Test(vdi_io, differencing_child_reads_through_and_writes_locally)
{
	const char *base = tmp_path("base.vdi");
	const char *child = tmp_path("child.vdi");
	struct img_create_options co = { .format = "vdi",
					 .backing_file = "base.vdi" };
	static uint8_t buf[2 * MiB], back[2 * MiB], exp[2 * MiB];
	char err[IMG_ERRMSG_MAX];
	struct vdi_header hb, hc;
	struct img *img;

	create_vdi(base, 2 * MiB, NULL, 0);
	img = open_rw(base, 0);
	fill(buf, sizeof(buf), 5);
	cr_assert_eq(img_pwrite(img, buf, sizeof(buf), 0), 0);
	cr_assert_eq(img_close(img), 0);
	cr_assert_eq(img_create(child, &co, err, sizeof(err)), 0, "%s", err);
	read_header(base, &hb);
	read_header(child, &hc);
	cr_assert_eq(hc.image_type, VDI_TYPE_DIFF);
	cr_assert(!memcmp(hc.uuid_link, hb.uuid_create, 16));
	cr_assert_eq(hc.disk_size, 2 * MiB);

	img = open_rw(child, 0);
	cr_assert_not_null(img_backing(img));
	memcpy(exp, buf, sizeof(exp));
	/* partial write: the rest of the block comes from the parent */
	fill(back, 4096, 9);
	cr_assert_eq(img_pwrite(img, back, 4096, 12288), 0);
	memcpy(exp + 12288, back, 4096);
	/* whole zero block over the parent: zero entry, no data */
	memset(back, 0, MiB);
	cr_assert_eq(img_pwrite(img, back, MiB, MiB), 0);
	memset(exp + MiB, 0, MiB);
	cr_assert_eq(img_pread(img, back, sizeof(back), 0), 0);
	cr_assert(!memcmp(back, exp, sizeof(exp)));
	cr_assert_eq(img_close(img), 0);
	cr_assert_eq(read_entry(child, 0), 0);
	cr_assert_eq(read_entry(child, 1), VDI_BLOCK_ZERO);
	read_header(child, &hc);
	cr_assert_eq(hc.blocks_allocated, 1);

	/* a parent with another UUID is refused */
	create_vdi(base, 2 * MiB, NULL, 0);
	{
		struct img_open_options o = { .flags = IMG_OPEN_RDONLY };

		cr_assert_lt(img_open(&img, child, &o, err, sizeof(err)), 0);
	}
}

/* Reads may run in parallel (IMG_DRV_CONCURRENT_READS): hammer a chain
 * from several threads and compare with the expected contents. */
struct reader_arg {
	struct img *img;
	const uint8_t *expect;
	uint64_t size;
	unsigned seed;
	int bad;
};

static void *reader_thread(void *p)
{
	struct reader_arg *a = p;
	static __thread uint8_t buf[3 * MiB];

	for (int i = 0; i < 200; i++) {
		uint64_t len, off;

		a->seed = a->seed * 1103515245 + 12345;
		len = ((a->seed >> 4) % (3 * MiB / 512) + 1) * 512;
		a->seed = a->seed * 1103515245 + 12345;
		off = ((a->seed >> 4) % ((a->size - len) / 512 + 1)) * 512;
		if (img_pread(a->img, buf, len, off) < 0 ||
		    memcmp(buf, a->expect + off, len))
			a->bad++;
	}
	return NULL;
}

Test(vdi_io, concurrent_reads_through_a_chain)
{
	const char *base = tmp_path("cbase.vdi");
	const char *child = tmp_path("cchild.vdi");
	struct img_create_options co = { .format = "vdi",
					 .backing_file = "cbase.vdi" };
	const uint64_t size = 16 * MiB;
	uint8_t *expect = calloc(1, size), *part = malloc(MiB);
	struct reader_arg args[4];
	pthread_t th[4];
	char err[IMG_ERRMSG_MAX];
	struct img *img;

	cr_assert(expect && part);
	create_vdi(base, size, NULL, 0);
	img = open_rw(base, 0);
	for (uint64_t b = 0; b < 16; b += 2) {
		fill(part, MiB, (unsigned)b);
		cr_assert_eq(img_pwrite(img, part, MiB, b * MiB), 0);
		memcpy(expect + b * MiB, part, MiB);
	}
	cr_assert_eq(img_close(img), 0);
	cr_assert_eq(img_create(child, &co, err, sizeof(err)), 0, "%s", err);
	img = open_rw(child, 0);
	for (uint64_t b = 0; b < 16; b += 3) {
		fill(part, 64 * 1024, (unsigned)b + 100);
		cr_assert_eq(img_pwrite(img, part, 64 * 1024, b * MiB + 4096),
			     0);
		memcpy(expect + b * MiB + 4096, part, 64 * 1024);
	}
	cr_assert_eq(img_flush(img), 0);
	for (int i = 0; i < 4; i++) {
		args[i] = (struct reader_arg){ img, expect, size, 7u + i, 0 };
		cr_assert_eq(pthread_create(&th[i], NULL, reader_thread,
					    &args[i]),
			     0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		cr_assert_eq(args[i].bad, 0, "thread %d: %d bad reads", i,
			     args[i].bad);
	}
	cr_assert_eq(img_close(img), 0);
	free(expect);
	free(part);
}
