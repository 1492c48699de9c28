/* SPDX-License-Identifier: MIT */
/* qcow2 driver: on-disk codecs, create/open, the data path against a
 * model, zero clusters, discard, block status, concurrent reads, table
 * growth, the commit order of metadata, check, and bad input. */
#include "formats/qcow2/qcow2_ondisk.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MiB (1u << 20)

#define TMPDIR_PREFIX "/tmp/test_qcow2"
#include "unit_tmpdir.h"

static uint64_t rng(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ull;
}

static void fill(uint8_t *buf, size_t len, uint64_t seed)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (uint8_t)(rng(&seed) >> 56);
}

static void create(const char *path, uint64_t size, const char *options,
		   const char *backing)
{
	char err[IMG_ERRMSG_MAX];
	struct img_create_options co = { .format = "qcow2",
					 .size = size,
					 .options = options,
					 .backing_file = backing };

	cr_assert_eq(img_create(path, &co, err, sizeof(err)), 0, "%s", err);
}

static struct img *open_img(const char *path, unsigned flags)
{
	char err[IMG_ERRMSG_MAX];
	struct img_open_options oo = { .format = NULL, .flags = flags };
	struct img *img;

	cr_assert_eq(img_open(&img, path, &oo, err, sizeof(err)), 0, "%s", err);
	return img;
}

static void assert_clean(const char *path)
{
	struct img *img = open_img(path, IMG_OPEN_CHECK);
	struct img_check_result res;

	cr_assert_eq(img_check(img, &res, 0), 0, "%s", img_errmsg(img));
	cr_assert_eq(res.corruptions, 0, "%s", res.messages[0]);
	cr_assert_eq(res.leaks, 0, "%s", res.messages[0]);
	img_close(img);
}

/* ---- codecs ----------------------------------------------------------- */

Test(qcow2_ondisk, refcount_entries_pack_as_the_spec_says)
{
	uint8_t b[64];

	for (unsigned order = 0; order <= 6; order++) {
		unsigned bits = 1u << order;
		uint64_t max = bits == 64 ? UINT64_MAX : (1ull << bits) - 1;
		uint64_t n = sizeof(b) * 8 / bits;

		memset(b, 0, sizeof(b));
		for (uint64_t i = 0; i < n; i++)
			qcow2_refblock_set(b, order, i, (i * 7 + 1) & max);
		for (uint64_t i = 0; i < n; i++)
			cr_assert_eq(qcow2_refblock_get(b, order, i),
				     (i * 7 + 1) & max, "order %u entry %llu",
				     order, (unsigned long long)i);
	}
	/* 1-bit: the first entry is the least significant bit. */
	memset(b, 0, sizeof(b));
	qcow2_refblock_set(b, 0, 0, 1);
	qcow2_refblock_set(b, 0, 9, 1);
	cr_assert_eq(b[0], 0x01);
	cr_assert_eq(b[1], 0x02);
	/* 16-bit: big-endian. */
	qcow2_refblock_set(b, 4, 2, 0x1234);
	cr_assert_eq(b[4], 0x12);
	cr_assert_eq(b[5], 0x34);
}

Test(qcow2_ondisk, header_round_trip_at_spec_offsets)
{
	struct qcow2_header h = { 0 }, back;
	struct qcow2_header_disk d;
	const uint8_t *p = (const uint8_t *)&d;

	h.version = 3;
	h.cluster_bits = 16;
	h.size = 0x123456789aull;
	h.l1_size = 7;
	h.l1_table_offset = 0x30000;
	h.refcount_table_offset = 0x10000;
	h.refcount_table_clusters = 1;
	h.incompatible_features = QCOW2_INCOMPAT_EXTL2;
	h.refcount_order = 4;
	h.header_length = 112;
	cr_assert_eq(qcow2_header_encode(&d, &h), 112);
	cr_assert_eq(memcmp(p, "QFI\xfb", 4), 0);
	cr_assert_eq(p[7], 3);
	cr_assert_eq(p[23], 16);       /* cluster_bits at 20 */
	cr_assert_eq(p[24 + 3], 0x12); /* size at 24, big-endian */
	cr_assert_eq(p[79], 0x10);     /* incompatible features at 72 */
	cr_assert_eq(p[99], 4);	       /* refcount_order at 96 */
	qcow2_header_decode(&back, &d);
	cr_assert_eq(back.size, h.size);
	cr_assert_eq(back.l1_table_offset, h.l1_table_offset);
	cr_assert_eq(back.incompatible_features, h.incompatible_features);
	/* Version 2 has 16-bit refcounts and a 72-byte header. */
	h.version = 2;
	cr_assert_eq(qcow2_header_encode(&d, &h), 72);
	qcow2_header_decode(&back, &d);
	cr_assert_eq(back.refcount_order, 4);
	cr_assert_eq(back.header_length, 72);
	cr_assert_eq(back.incompatible_features, 0);
}

/* ---- data path against a model ---------------------------------------- */

static void model_run(const char *options, uint64_t size, int writes,
		      uint64_t seed)
{
	const char *path = tmp_path("m.qcow2");
	uint8_t *model = calloc(1, size), *disk = malloc(size);
	uint8_t *buf = malloc(300 * 1024);
	struct img *img;

	cr_assert(model && disk && buf);
	create(path, size, options, NULL);
	img = open_img(path, IMG_OPEN_RDWR);
	for (int i = 0; i < writes; i++) {
		uint64_t len = rng(&seed) % 3 == 0
				       ? rng(&seed) % (300 * 1024) + 1
				       : rng(&seed) % 9000 + 1;
		uint64_t off = rng(&seed) % (size - len);
		int kind = (int)(rng(&seed) % 8);

		if (kind == 0) {
			cr_assert_eq(img_write_zeroes(img, off, len,
						      IMG_ZERO_MAY_UNMAP),
				     0, "%s", img_errmsg(img));
			memset(model + off, 0, len);
		} else {
			fill(buf, len, rng(&seed));
			cr_assert_eq(img_pwrite(img, buf, len, off), 0, "%s",
				     img_errmsg(img));
			memcpy(model + off, buf, len);
		}
		if (i % 16 == 15)
			cr_assert_eq(img_flush(img), 0, "%s", img_errmsg(img));
	}
	cr_assert_eq(img_pread(img, disk, size, 0), 0);
	cr_assert_eq(memcmp(disk, model, size), 0, "before reopen (%s)",
		     options);
	cr_assert_eq(img_close(img), 0);
	img = open_img(path, IMG_OPEN_RDONLY);
	memset(disk, 0xee, size);
	cr_assert_eq(img_pread(img, disk, size, 0), 0);
	cr_assert_eq(memcmp(disk, model, size), 0, "after reopen (%s)",
		     options);
	img_close(img);
	assert_clean(path);
	free(model);
	free(disk);
	free(buf);
}

Test(qcow2_data, model_v3_default, .init = make_tmpdir, .fini = remove_tmpdir)
{
	model_run("", 8 * MiB, 120, 1);
}

Test(qcow2_data, model_v2, .init = make_tmpdir, .fini = remove_tmpdir)
{
	model_run("compat=0.10,cluster_size=4096", 8 * MiB + 1536, 120, 2);
}

Test(qcow2_data, model_small_clusters_1bit, .init = make_tmpdir,
     .fini = remove_tmpdir)
{
	model_run("cluster_size=512,refcount_bits=1", 4 * MiB, 100, 3);
}

Test(qcow2_data, model_64bit_refcounts_grow_the_table, .init = make_tmpdir,
     .fini = remove_tmpdir)
{
	uint8_t h[112];
	int fd;

	model_run("cluster_size=512,refcount_bits=64", 8 * MiB, 200, 4);
	fd = open(tmp_path("m.qcow2"), O_RDONLY);
	cr_assert_geq(fd, 0);
	cr_assert_eq(pread(fd, h, sizeof(h), 0), (ssize_t)sizeof(h));
	close(fd);
	/* refcount_table_clusters at 56: it outgrew its one cluster */
	cr_assert_gt(h[59] | h[58] << 8, 1);
}

Test(qcow2_data, model_extended_l2, .init = make_tmpdir, .fini = remove_tmpdir)
{
	model_run("extended_l2=on,cluster_size=32768", 8 * MiB, 100, 5);
}

Test(qcow2_data, model_2m_clusters, .init = make_tmpdir, .fini = remove_tmpdir)
{
	model_run("cluster_size=2M,refcount_bits=8", 8 * MiB, 60, 6);
}

/* ---- zero clusters, discard, block status ----------------------------- */

Test(qcow2_status, zeroes_discard_and_backing, .init = make_tmpdir,
     .fini = remove_tmpdir)
{
	const char *base = tmp_path("base.qcow2"), *top = tmp_path("top.qcow2");
	uint8_t *buf = malloc(MiB), *back = malloc(MiB);
	struct img_extent e;
	struct img *img;

	create(base, 4 * MiB, "", NULL);
	img = open_img(base, IMG_OPEN_RDWR);
	memset(buf, 0xab, MiB);
	cr_assert_eq(img_pwrite(img, buf, MiB, 0), 0);
	cr_assert_eq(img_close(img), 0);
	create(top, 0, "cluster_size=65536", "base.qcow2");
	img = open_img(top, IMG_OPEN_RDWR);
	/* unallocated: falls through to the parent */
	cr_assert_eq(img_block_status_layer(img, 0, MiB, &e), 0);
	cr_assert_eq(e.depth, -1);
	cr_assert_eq(e.flags & IMG_EXTENT_ALLOCATED, 0);
	/* zeroes over the parent's data: zero clusters, allocated here */
	cr_assert_eq(img_write_zeroes(img, 65536, 131072, IMG_ZERO_MAY_UNMAP),
		     0);
	cr_assert_eq(img_block_status_layer(img, 65536, MiB, &e), 0);
	cr_assert_eq(e.flags, IMG_EXTENT_ZERO | IMG_EXTENT_ALLOCATED);
	cr_assert_eq(e.length, 131072);
	cr_assert_eq(img_pread(img, back, MiB, 0), 0);
	for (size_t i = 0; i < MiB; i++)
		cr_assert_eq(back[i], i >= 65536 && i < 196608 ? 0 : 0xab,
			     "byte %zu", i);
	/* a partial-cluster write keeps the parent's bytes around it */
	memset(buf, 0x11, 1000);
	cr_assert_eq(img_pwrite(img, buf, 1000, 300000), 0);
	cr_assert_eq(img_pread(img, back, 65536, 262144), 0);
	for (size_t i = 0; i < 65536; i++) {
		uint64_t o = 262144 + i;

		cr_assert_eq(back[i], o >= 300000 && o < 301000 ? 0x11 : 0xab,
			     "byte %llu", (unsigned long long)o);
	}
	cr_assert_eq(img_block_status_layer(img, 262144, 65536, &e), 0);
	cr_assert_eq(e.flags, IMG_EXTENT_DATA | IMG_EXTENT_ALLOCATED);
	cr_assert_geq(e.file_offset, 65536);
	/* discard over a parent (v3): reads as zero, as QEMU makes it */
	cr_assert_eq(img_discard(img, 262144, 65536), 0);
	cr_assert_eq(img_pread(img, back, 65536, 262144), 0);
	cr_assert(img_buf_is_zero(back, 65536));
	cr_assert_eq(img_close(img), 0);
	assert_clean(top);
	free(buf);
	free(back);
}

/* ---- concurrent reads ------------------------------------------------- */

struct reader {
	struct img *img;
	const uint8_t *want;
	uint64_t size;
	int id;
	int bad;
};

static void *reader_main(void *arg)
{
	struct reader *r = arg;
	uint8_t *buf = malloc(65536);
	uint64_t seed = (uint64_t)r->id * 77 + 1;

	for (int i = 0; i < 400 && buf; i++) {
		uint64_t len = rng(&seed) % 65536 + 1;
		uint64_t off = rng(&seed) % (r->size - len);

		if (img_pread(r->img, buf, len, off) < 0 ||
		    memcmp(buf, r->want + off, len))
			r->bad++;
	}
	free(buf);
	return NULL;
}

Test(qcow2_concurrency, reads_in_parallel_load_tables_once, .init = make_tmpdir,
     .fini = remove_tmpdir)
{
	const char *path = tmp_path("c.qcow2");
	uint64_t size = 16 * MiB;
	uint8_t *want = malloc(size);
	struct reader r[4];
	pthread_t th[4];
	struct img *img;

	cr_assert_not_null(want);
	fill(want, size, 9);
	memset(want + 3 * MiB, 0, 2 * MiB);
	create(path, size, "cluster_size=4096", NULL);
	img = open_img(path, IMG_OPEN_RDWR);
	cr_assert_eq(img_pwrite(img, want, 3 * MiB, 0), 0);
	cr_assert_eq(img_pwrite(img, want + 5 * MiB, size - 5 * MiB, 5 * MiB),
		     0);
	cr_assert_eq(img_close(img), 0);
	img = open_img(path, IMG_OPEN_RDONLY);
	for (int i = 0; i < 4; i++) {
		r[i] = (struct reader){ img, want, size, i, 0 };
		cr_assert_eq(pthread_create(&th[i], NULL, reader_main, &r[i]),
			     0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		cr_assert_eq(r[i].bad, 0, "reader %d", i);
	}
	img_close(img);
	free(want);
}

/* ---- commit order ----------------------------------------------------- */

#define MAX_EVENTS 64
static struct {
	enum img_io_op op;
	uint64_t off;
} events[MAX_EVENTS];
static int nevents;

static int record_hook(enum img_io_op op, int fd, uint64_t off, uint64_t len,
		       void *opaque)
{
	(void)fd, (void)len, (void)opaque;
	if (nevents < MAX_EVENTS)
		events[nevents++] = (typeof(events[0])){ op, off };
	return 0;
}

static int find_event(enum img_io_op op, uint64_t off, int from)
{
	for (int i = from; i < nevents; i++)
		if (events[i].op == op &&
		    (op == IMG_IO_SYNC || events[i].off == off))
			return i;
	return -1;
}

Test(qcow2_order, data_then_refcounts_then_l2_then_l1, .init = make_tmpdir,
     .fini = remove_tmpdir)
{
	const char *path = tmp_path("o.qcow2");
	uint8_t buf[4096];
	struct img *img;
	int data, ref, l2, l1;

	/* 64 KiB clusters: header 0, refcount table 1, refcount block 2,
	 * L1 3; the write allocates an L2 table (4) and a data cluster (5). */
	create(path, 64 * MiB, "", NULL);
	img = open_img(path, IMG_OPEN_RDWR);
	memset(buf, 0x5a, sizeof(buf));
	nevents = 0;
	img_set_io_hook(record_hook, NULL);
	cr_assert_eq(img_pwrite(img, buf, sizeof(buf), 0), 0);
	cr_assert_eq(img_flush(img), 0);
	img_set_io_hook(NULL, NULL);
	data = find_event(IMG_IO_WRITE, 5 * 65536, 0);
	ref = find_event(IMG_IO_WRITE, 2 * 65536, 0);
	l2 = find_event(IMG_IO_WRITE, 4 * 65536, 0);
	l1 = find_event(IMG_IO_WRITE, 3 * 65536, 0);
	cr_assert(data >= 0 && ref > data && l2 > ref && l1 > l2,
		  "order data %d refcount %d L2 %d L1 %d", data, ref, l2, l1);
	/* a sync between each step */
	cr_assert(find_event(IMG_IO_SYNC, 0, data) < ref);
	cr_assert(find_event(IMG_IO_SYNC, 0, ref) < l2);
	cr_assert(find_event(IMG_IO_SYNC, 0, l2) < l1);
	cr_assert_gt(find_event(IMG_IO_SYNC, 0, l1), l1);
	img_close(img);
	assert_clean(path);
}

/* ---- resize ----------------------------------------------------------- */

Test(qcow2_resize, grow_moves_l1_shrink_only_unused_tail, .init = make_tmpdir,
     .fini = remove_tmpdir)
{
	const char *path = tmp_path("r.qcow2");
	uint8_t buf[512], back[512];
	struct img *img;

	create(path, MiB, "cluster_size=512", NULL);
	img = open_img(path, IMG_OPEN_RDWR);
	memset(buf, 0x77, sizeof(buf));
	cr_assert_eq(img_pwrite(img, buf, sizeof(buf), 4096), 0);
	cr_assert_eq(img_resize(img, 256 * MiB, 0), 0, "%s", img_errmsg(img));
	cr_assert_eq(img_size(img), 256 * MiB);
	cr_assert_eq(img_pwrite(img, buf, sizeof(buf), 200 * MiB), 0);
	cr_assert_eq(img_pread(img, back, sizeof(back), 4096), 0);
	cr_assert_eq(memcmp(buf, back, sizeof(buf)), 0);
	cr_assert_lt(img_resize(img, 100 * MiB, IMG_RESIZE_SHRINK), 0);
	cr_assert_not_null(strstr(img_errmsg(img), "past the new end"));
	cr_assert_eq(img_discard(img, 200 * MiB, 512), 0);
	cr_assert_eq(img_resize(img, 100 * MiB, IMG_RESIZE_SHRINK), 0, "%s",
		     img_errmsg(img));
	cr_assert_eq(img_close(img), 0);
	assert_clean(path);
	img = open_img(path, IMG_OPEN_RDONLY);
	cr_assert_eq(img_size(img), 100 * MiB);
	cr_assert_eq(img_pread(img, back, sizeof(back), 4096), 0);
	cr_assert_eq(memcmp(buf, back, sizeof(buf)), 0);
	img_close(img);
}

/* ---- check ------------------------------------------------------------ */

static void poke(const char *path, uint64_t off, const void *p, size_t len)
{
	int fd = open(path, O_RDWR);

	cr_assert_geq(fd, 0);
	cr_assert_eq(pwrite(fd, p, len, off), (ssize_t)len);
	close(fd);
}

Test(qcow2_check, leak_found_and_repaired, .init = make_tmpdir,
     .fini = remove_tmpdir)
{
	const char *path = tmp_path("k.qcow2");
	struct img_check_result res;
	uint16_t one = IMG_BE16(1);
	struct img *img;

	create(path, 4 * MiB, "", NULL);
	/* cluster 9's refcount (block at cluster 2) without a reference */
	poke(path, 2 * 65536 + 9 * 2, &one, 2);
	img = open_img(path, IMG_OPEN_CHECK);
	cr_assert_eq(img_check(img, &res, 0), 0);
	cr_assert_eq(res.leaks, 1);
	cr_assert_eq(res.corruptions, 0);
	img_close(img);
	img = open_img(path, IMG_OPEN_CHECK | IMG_OPEN_RDWR);
	cr_assert_eq(img_check(img, &res, IMG_CHECK_FIX_LEAKS), 0);
	cr_assert_eq(res.leaks_fixed, 1);
	img_close(img);
	assert_clean(path);
}

Test(qcow2_check, missing_refcount_is_a_corruption, .init = make_tmpdir,
     .fini = remove_tmpdir)
{
	const char *path = tmp_path("z.qcow2");
	struct img_check_result res;
	uint16_t zero = 0;
	struct img *img;

	create(path, 4 * MiB, "", NULL);
	/* the L1 table's own refcount (cluster 3) dropped */
	poke(path, 2 * 65536 + 3 * 2, &zero, 2);
	img = open_img(path, IMG_OPEN_CHECK);
	cr_assert_eq(img_check(img, &res, 0), 0);
	cr_assert_eq(res.corruptions, 1);
	img_close(img);
	img = open_img(path, IMG_OPEN_CHECK | IMG_OPEN_RDWR);
	cr_assert_eq(img_check(img, &res, IMG_CHECK_FIX_ERRORS), 0);
	cr_assert_eq(res.corruptions_fixed, 1);
	img_close(img);
	assert_clean(path);
}

/* ---- bad input -------------------------------------------------------- */

static void expect_refusal(const char *path, const char *words)
{
	char err[IMG_ERRMSG_MAX];
	struct img_open_options oo = { .format = "qcow2" };
	struct img *img;

	cr_assert_lt(img_open(&img, path, &oo, err, sizeof(err)), 0);
	cr_assert_not_null(strstr(err, words), "message: %s", err);
	cr_assert_null(strchr(err, '\n'));
}

Test(qcow2_bad, refusals_name_the_problem, .init = make_tmpdir,
     .fini = remove_tmpdir)
{
	const char *path = tmp_path("b.qcow2");
	uint64_t v;
	uint32_t w;
	uint8_t entry[8 + 48] = { 0 };

	/* unknown incompatible bit 9, named in the feature-name table
	 * (the table is the header's first extension, at 112 + 8) */
	create(path, MiB, "", NULL);
	v = IMG_BE64(1ull << 9);
	poke(path, 72, &v, 8);
	entry[0] = 0;
	entry[1] = 9;
	memcpy(entry + 2, "time travel", 11);
	poke(path, 112 + 8 + 48, entry, 48);
	expect_refusal(path, "time travel");

	create(path, MiB, "", NULL);
	v = IMG_BE64(1ull << 40); /* L1 table past the end */
	poke(path, 40, &v, 8);
	expect_refusal(path, "L1 table");

	create(path, MiB, "", NULL);
	w = IMG_BE32(2); /* LUKS */
	poke(path, 32, &w, 4);
	expect_refusal(path, "LUKS");

	create(path, MiB, "", NULL);
	w = IMG_BE32(40); /* cluster_bits */
	poke(path, 20, &w, 4);
	expect_refusal(path, "cluster size");

	create(path, MiB, "", NULL);
	w = IMG_BE32(100000); /* snapshot count */
	poke(path, 60, &w, 4);
	expect_refusal(path, "snapshot count");
}

/* ---- compressed writing ----------------------------------------------- */

Test(qcow2_compress, partial_and_whole_clusters, .init = make_tmpdir,
     .fini = remove_tmpdir)
{
	const char *path = tmp_path("c.qcow2");
	uint64_t size = 4 * MiB + 1536;
	uint8_t *model = calloc(1, size), *disk = malloc(size);
	struct img *img;
	struct stat st;

	cr_assert(model && disk);
	create(path, size, "", NULL);
	img = open_img(path, IMG_OPEN_RDWR | IMG_OPEN_COMPRESS);
	/* compressible text-like data */
	for (uint64_t i = 0; i < size; i++)
		model[i] = (uint8_t)("qcow2 compressed "[i % 17]);
	memset(model + 1000, 0, 7192); /* a hole inside cluster 0 */
	cr_assert_eq(img_pwrite(img, model, 1000, 0), 0);
	cr_assert_eq(img_pwrite(img, model + 8192, 3000, 8192), 0);
	/* the gathered cluster reads back before it is stored */
	cr_assert_eq(img_pread(img, disk, 11192, 0), 0);
	cr_assert_eq(memcmp(disk, model, 11192), 0);
	cr_assert_eq(img_pwrite(img, model + 11192, size - 11192, 11192), 0);
	cr_assert_eq(img_close(img), 0);
	img = open_img(path, IMG_OPEN_RDONLY);
	cr_assert_eq(img_pread(img, disk, size, 0), 0);
	cr_assert_eq(memcmp(disk, model, size), 0);
	img_close(img);
	assert_clean(path);
	cr_assert_eq(stat(path, &st), 0);
	cr_assert_lt(st.st_size, (off_t)(size / 4), "%lld bytes",
		     (long long)st.st_size);
	free(model);
	free(disk);
}

/* ---- internal snapshots ----------------------------------------------- */

Test(qcow2_snapshot, create_apply_delete_keep_refcounts_exact,
     .init = make_tmpdir, .fini = remove_tmpdir)
{
	const char *path = tmp_path("s.qcow2");
	uint8_t *a = malloc(2 * MiB), *b = malloc(2 * MiB),
		*back = malloc(2 * MiB);
	struct img_snapshot *list;
	struct img *img;
	int n;

	cr_assert(a && b && back);
	fill(a, 2 * MiB, 11);
	fill(b, 2 * MiB, 12);
	create(path, 2 * MiB, "cluster_size=4096", NULL);
	img = open_img(path, IMG_OPEN_RDWR);
	cr_assert_eq(img_pwrite(img, a, 2 * MiB, 0), 0);
	cr_assert_eq(img_snapshot_create(img, "one"), 0, "%s", img_errmsg(img));
	cr_assert_lt(img_snapshot_create(img, "one"), 0);
	cr_assert_eq(img_pwrite(img, b, MiB, 0), 0);
	cr_assert_eq(img_snapshot_list(img, &list, &n), 0);
	cr_assert_eq(n, 1);
	cr_assert_str_eq(list[0].name, "one");
	cr_assert_eq(list[0].disk_size, 2 * MiB);
	free(list);
	cr_assert_eq(img_close(img), 0);
	assert_clean(path);

	img = open_img(path, IMG_OPEN_RDONLY);
	cr_assert_eq(img_snapshot_load(img, "one"), 0);
	cr_assert_eq(img_pread(img, back, 2 * MiB, 0), 0);
	cr_assert_eq(memcmp(back, a, 2 * MiB), 0);
	img_close(img);

	img = open_img(path, IMG_OPEN_RDWR);
	cr_assert_eq(img_snapshot_apply(img, "one"), 0, "%s", img_errmsg(img));
	cr_assert_eq(img_pread(img, back, 2 * MiB, 0), 0);
	cr_assert_eq(memcmp(back, a, 2 * MiB), 0);
	cr_assert_eq(img_pwrite(img, b, 4096, 8192), 0);
	cr_assert_eq(img_snapshot_delete(img, "1"), 0, "%s", img_errmsg(img));
	cr_assert_eq(img_close(img), 0);
	assert_clean(path);
	img = open_img(path, IMG_OPEN_RDONLY);
	memcpy(a + 8192, b, 4096);
	cr_assert_eq(img_pread(img, back, 2 * MiB, 0), 0);
	cr_assert_eq(memcmp(back, a, 2 * MiB), 0);
	cr_assert(!img_has_internal_snapshots(img) == false);
	img_close(img);
	free(a);
	free(b);
	free(back);
}

Test(qcow2_bad, refcount_block_for_far_clusters_is_a_leak_not_an_allocation,
     .init = make_tmpdir, .fini = remove_tmpdir)
{
	const char *path = tmp_path("far.qcow2");
	struct img_check_result res;
	uint64_t e = IMG_BE64(2 * 65536);
	struct img *img;

	/* 2 MiB of refcount table: entry 200000 reuses block 2, whose four
	 * counts then stand for clusters 200000 * 32768 + 0..3 (terabytes
	 * past the end of the file). */
	create(path, MiB, "", NULL);
	{
		uint32_t n = IMG_BE32(32);
		int fd = open(path, O_RDWR);

		cr_assert_geq(fd, 0);
		cr_assert_eq(ftruncate(fd, 64 * 65536), 0);
		cr_assert_eq(pwrite(fd, &n, 4, 56), 4);
		close(fd);
	}
	poke(path, 65536 + 200000 * 8, &e, 8);
	img = open_img(path, IMG_OPEN_CHECK);
	cr_assert_eq(img_check(img, &res, 0), 0, "%s", img_errmsg(img));
	cr_assert_geq(res.leaks, 4);
	cr_assert_geq(res.corruptions, 1);
	img_close(img);
}
