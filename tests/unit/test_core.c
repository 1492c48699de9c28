/* SPDX-License-Identifier: MIT */
/* Unit tests for the libimg core: sizes, open/probe errors, locking, range
 * checks, sub-sector read-modify-write, iovec helpers, create options and
 * the I/O hook.  Everything runs on real raw files in a scratch dir. */
#include "driver.h"
#include "internal.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[64];
static char errbuf[IMG_ERRMSG_MAX];

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/test_core.XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	errbuf[0] = '\0';
}

static void teardown(void)
{
	char cmd[128];

	img_set_io_hook(NULL, NULL);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	cr_expect_eq(system(cmd), 0);
}

TestSuite(core, .init = setup, .fini = teardown);

static const char *path_in(const char *name)
{
	static char buf[4][128];
	static int next;
	char *p = buf[next++ % 4];

	snprintf(p, 128, "%s/%s", dir, name);
	return p;
}

/* A raw file of size bytes filled with a position-dependent pattern. */
static void make_pattern_file(const char *path, size_t size, uint8_t *copy)
{
	uint8_t *buf = malloc(size);
	int fd;

	cr_assert_not_null(buf);
	for (size_t i = 0; i < size; i++)
		buf[i] = (uint8_t)(i * 7 + (i >> 9) * 13 + 1);
	fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0644);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, buf, size), (ssize_t)size);
	close(fd);
	if (copy)
		memcpy(copy, buf, size);
	free(buf);
}

static struct img *open_path(const char *path, unsigned flags)
{
	struct img_open_options o = { .flags = flags };
	struct img *img = NULL;
	int r = img_open(&img, path, &o, errbuf, sizeof(errbuf));

	cr_assert_eq(r, 0, "open %s: %d %s", path, r, errbuf);
	return img;
}

/* ---- sizes ---------------------------------------------------------------*/

Test(core, parse_size_valid)
{
	static const struct {
		const char *text;
		uint64_t bytes;
	} cases[] = {
		{ "0", 0 },
		{ "2048", 2048 },
		{ "100K", 100 << 10 },
		{ "100k", 100 << 10 },
		{ "1KiB", 1024 },
		{ "1KB", 1024 },
		{ "512M", 512ull << 20 },
		{ "1G", 1ull << 30 },
		{ "1T", 1ull << 40 },
		{ "2P", 2ull << 50 },
		{ "1.5G", 3ull << 29 },
		{ "0.5K", 512 },
		{ "20s", 20 * 512 },
		{ "7b", 7 },
		{ "15E", 15ull << 60 },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t v = 12345;

		cr_assert_eq(img_parse_size(cases[i].text, &v), 0, "%s",
			     cases[i].text);
		cr_assert_eq(v, cases[i].bytes, "%s -> %llu", cases[i].text,
			     (unsigned long long)v);
	}
}

Test(core, parse_size_invalid)
{
	static const char *const garbage[] = { "12Q", "",      "-1",  "G",
					       "1.5", "1..5G", "1G5", "abc",
					       "1.G", "1 G x", "1.5s" };
	uint64_t v;

	for (size_t i = 0; i < sizeof(garbage) / sizeof(garbage[0]); i++)
		cr_assert_eq(img_parse_size(garbage[i], &v), -EINVAL, "'%s'",
			     garbage[i]);
	cr_assert_eq(img_parse_size("16E", &v), -ERANGE);
	cr_assert_eq(img_parse_size("99999999999999999999", &v), -ERANGE);
	cr_assert_eq(img_parse_size("17179869184G", &v), -ERANGE);
	cr_assert_eq(img_parse_size(NULL, &v), -EINVAL);
}

Test(core, format_size)
{
	char b[32];

	cr_assert_str_eq(img_format_size(0, b, sizeof(b)), "0 B");
	cr_assert_str_eq(img_format_size(512, b, sizeof(b)), "512 B");
	cr_assert_str_eq(img_format_size(1536, b, sizeof(b)), "1.5 KiB");
	cr_assert_str_eq(img_format_size(1ull << 30, b, sizeof(b)), "1 GiB");
	cr_assert_str_eq(img_format_size(300ull << 20, b, sizeof(b)),
			 "300 MiB");
}

/* ---- formats, version ------------------------------------------------------*/

Test(core, formats_and_version)
{
	bool raw = false;

	for (const char *const *f = img_formats(); *f; f++)
		raw |= strcmp(*f, "raw") == 0;
	cr_assert(raw);
	cr_assert_str_eq(img_format_canonical("RAW"), "raw");
	cr_assert_null(img_format_canonical("qcow9"));
	cr_assert_null(img_format_create_options("qcow9"));
	cr_assert_not_null(img_format_create_options("raw"));
	cr_assert_str_eq(img_version(), IMG_VERSION);
}

/* ---- open and probe errors -----------------------------------------------*/

Test(core, open_missing_file)
{
	struct img *img = (struct img *)1;
	const char *p = path_in("missing.img");
	char want[256];

	cr_assert_eq(img_open(&img, p, NULL, errbuf, sizeof(errbuf)), -ENOENT);
	snprintf(want, sizeof(want), "%s: No such file or directory", p);
	cr_assert_str_eq(errbuf, want);
	cr_assert_null(img);
}

Test(core, open_directory)
{
	struct img *img;
	char want[256];

	cr_assert_eq(img_open(&img, dir, NULL, errbuf, sizeof(errbuf)),
		     -EISDIR);
	snprintf(want, sizeof(want), "%s: is a directory", dir);
	cr_assert_str_eq(errbuf, want);
	cr_assert_eq(img_probe(dir, want, sizeof(want), errbuf, sizeof(errbuf)),
		     -EISDIR);
}

Test(core, open_unknown_format)
{
	struct img_open_options o = { .format = "qcow9" };
	struct img *img;

	make_pattern_file(path_in("a.img"), 4096, NULL);
	cr_assert_eq(img_open(&img, path_in("a.img"), &o, errbuf,
			      sizeof(errbuf)),
		     -EINVAL);
	cr_assert(strstr(errbuf, "unknown format 'qcow9'"), "%s", errbuf);
}

Test(core, open_unreadable)
{
	struct img *img;

	if (geteuid() == 0)
		cr_skip_test("root reads anything");
	make_pattern_file(path_in("a.img"), 4096, NULL);
	chmod(path_in("a.img"), 0);
	cr_assert_eq(img_open(&img, path_in("a.img"), NULL, errbuf,
			      sizeof(errbuf)),
		     -EACCES);
	cr_assert(strstr(errbuf, "Permission denied"), "%s", errbuf);
}

Test(core, probe_raw_and_empty)
{
	char fmt[16];

	make_pattern_file(path_in("a.img"), 8192, NULL);
	cr_assert_eq(img_probe(path_in("a.img"), fmt, sizeof(fmt), errbuf,
			       sizeof(errbuf)),
		     0);
	cr_assert_str_eq(fmt, "raw");
	make_pattern_file(path_in("empty.img"), 0, NULL);
	cr_assert_eq(img_probe(path_in("empty.img"), fmt, sizeof(fmt), errbuf,
			       sizeof(errbuf)),
		     0);
	cr_assert_str_eq(fmt, "raw");
}

Test(core, handle_accessors)
{
	struct img *img;

	make_pattern_file(path_in("a.img"), 65536, NULL);
	img = open_path(path_in("a.img"), IMG_OPEN_RDONLY);
	cr_assert_str_eq(img_filename(img), path_in("a.img"));
	cr_assert_str_eq(img_dirname(img), dir);
	cr_assert_str_eq(img_format(img), "raw");
	cr_assert_eq(img_size(img), 65536);
	cr_assert_not(img_is_writable(img));
	cr_assert_null(img_backing(img));
	cr_assert_eq(img_cluster_size(img), 0);
	cr_assert_eq(img_close(img), 0);
}

/* ---- locking ---------------------------------------------------------------*/

Test(core, lock_conflicts)
{
	struct img_open_options rw = { .flags = IMG_OPEN_RDWR };
	struct img_open_options ro = { .flags = IMG_OPEN_RDONLY };
	struct img_open_options force = { .flags = IMG_OPEN_RDWR |
						   IMG_OPEN_NO_LOCK };
	struct img *a, *b, *c;
	const char *p = path_in("a.img");

	make_pattern_file(p, 65536, NULL);
	a = open_path(p, IMG_OPEN_RDWR);
	/* A second writer and a reader are both refused. */
	cr_assert_eq(img_open(&b, p, &rw, errbuf, sizeof(errbuf)), -EBUSY);
	cr_assert(strstr(errbuf, "image is in use by another process"), "%s",
		  errbuf);
	cr_assert_eq(img_open(&b, p, &ro, errbuf, sizeof(errbuf)), -EBUSY);
	/* Experts may override. */
	cr_assert_eq(img_open(&b, p, &force, errbuf, sizeof(errbuf)), 0);
	img_close(b);
	img_close(a);
	/* Readers share. */
	a = open_path(p, IMG_OPEN_RDONLY);
	b = open_path(p, IMG_OPEN_RDONLY);
	cr_assert_eq(img_open(&c, p, &rw, errbuf, sizeof(errbuf)), -EBUSY);
	img_close(a);
	img_close(b);
	/* All closed: a writer gets in again. */
	a = open_path(p, IMG_OPEN_RDWR);
	img_close(a);
}

Test(core, create_refuses_locked_image_and_keeps_it)
{
	struct img_create_options co = { .format = "raw", .size = 4096 };
	const char *p = path_in("a.img");
	struct img *a;
	struct stat st;

	make_pattern_file(p, 65536, NULL);
	a = open_path(p, IMG_OPEN_RDWR);
	cr_assert_eq(img_create(p, &co, errbuf, sizeof(errbuf)), -EBUSY);
	cr_assert(strstr(errbuf, "in use"), "%s", errbuf);
	cr_assert_eq(stat(p, &st), 0);
	cr_assert_eq(st.st_size, 65536, "a refused create must not truncate");
	img_close(a);
}

/* ---- range checks and read-only -------------------------------------------*/

Test(core, range_checks)
{
	struct img *img;
	char buf[1024];

	make_pattern_file(path_in("a.img"), 8192, NULL);
	img = open_path(path_in("a.img"), IMG_OPEN_RDWR);
	cr_assert_eq(img_pread(img, buf, 1024, 8192 - 1024), 0);
	cr_assert_eq(img_pread(img, buf, 1, 8192), -EINVAL);
	cr_assert(strstr(img_errmsg(img), "beyond the end of the image"), "%s",
		  img_errmsg(img));
	cr_assert(strncmp(img_errmsg(img), path_in("a.img"),
			  strlen(path_in("a.img"))) == 0);
	cr_assert_eq(img_pread(img, buf, 1024, 8000), -EINVAL);
	/* off + len overflows 64 bits */
	cr_assert_eq(img_pread(img, buf, 16, UINT64_MAX - 8), -EINVAL);
	cr_assert_eq(img_pwrite(img, buf, 16, UINT64_MAX - 8), -EINVAL);
	cr_assert_eq(img_write_zeroes(img, 4096, UINT64_MAX, 0), -EINVAL);
	cr_assert_eq(img_discard(img, 9000, 1), -EINVAL);
	/* Zero-length requests at the end are fine. */
	cr_assert_eq(img_pread(img, buf, 0, 8192), 0);
	img_close(img);
}

Test(core, read_only_refuses_writes)
{
	struct img *img;
	char buf[512] = { 0 };

	make_pattern_file(path_in("a.img"), 8192, NULL);
	img = open_path(path_in("a.img"), IMG_OPEN_RDONLY);
	cr_assert_eq(img_pwrite(img, buf, 512, 0), -EROFS);
	cr_assert(strstr(img_errmsg(img), "read-only"));
	cr_assert_eq(img_write_zeroes(img, 0, 512, 0), -EROFS);
	cr_assert_eq(img_discard(img, 0, 512), -EROFS);
	cr_assert_eq(img_resize(img, 16384, 0), -EROFS);
	cr_assert_eq(img_flush(img), 0);
	img_close(img);
}

Test(core, force_opens_read_only)
{
	struct img *img;

	make_pattern_file(path_in("a.img"), 8192, NULL);
	img = open_path(path_in("a.img"), IMG_OPEN_RDWR | IMG_OPEN_FORCE);
	cr_assert_not(img_is_writable(img));
	img_close(img);
}

/* ---- sub-sector read-modify-write --------------------------------------------*/

#define RMW_SIZE (256 * 1024)

static uint64_t rng_state = 88172645463325252ull;

static uint64_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static void check_whole_image(struct img *img, const uint8_t *shadow)
{
	uint8_t *got = malloc(RMW_SIZE);

	cr_assert_not_null(got);
	cr_assert_eq(img_pread(img, got, RMW_SIZE, 0), 0);
	for (size_t i = 0; i < RMW_SIZE; i++)
		if (got[i] != shadow[i])
			cr_assert_fail("byte %zu: got %u, want %u", i, got[i],
				       shadow[i]);
	free(got);
}

Test(core, unaligned_rmw_matches_shadow)
{
	static uint8_t shadow[RMW_SIZE];
	uint8_t buf[9000], got[9000];
	struct img *img;

	make_pattern_file(path_in("a.img"), RMW_SIZE, shadow);
	img = open_path(path_in("a.img"), IMG_OPEN_RDWR);
	img_test_force_sector_io(img);
	for (int i = 0; i < 2000; i++) {
		size_t len = 1 + rng() % sizeof(buf);
		uint64_t off = rng() % (RMW_SIZE - len + 1);

		if (i % 3 == 0) {
			cr_assert_eq(img_pread(img, got, len, off), 0);
			cr_assert_eq(memcmp(got, shadow + off, len), 0,
				     "read %zu at %llu", len,
				     (unsigned long long)off);
		} else {
			for (size_t j = 0; j < len; j++)
				buf[j] = (uint8_t)rng();
			cr_assert_eq(img_pwrite(img, buf, len, off), 0);
			memcpy(shadow + off, buf, len);
		}
	}
	/* Small cases at the edges: within one sector, across one
	 * boundary, the very last bytes. */
	memset(buf, 0xAB, 3);
	cr_assert_eq(img_pwrite(img, buf, 3, 510), 0);
	memcpy(shadow + 510, buf, 3);
	cr_assert_eq(img_pwrite(img, buf, 1, RMW_SIZE - 1), 0);
	shadow[RMW_SIZE - 1] = 0xAB;
	cr_assert_eq(img_pwrite(img, buf, 2, 100), 0);
	memcpy(shadow + 100, buf, 2);
	check_whole_image(img, shadow);
	img_close(img);
}

Test(core, unaligned_rmw_many_iovecs)
{
	static uint8_t shadow[RMW_SIZE];
	enum { N = 100 };
	uint8_t data[N][37];
	struct iovec iov[N];
	struct img *img;

	make_pattern_file(path_in("a.img"), RMW_SIZE, shadow);
	img = open_path(path_in("a.img"), IMG_OPEN_RDWR);
	img_test_force_sector_io(img);
	for (int i = 0; i < N; i++) {
		memset(data[i], i + 1, sizeof(data[i]));
		iov[i].iov_base = data[i];
		iov[i].iov_len = sizeof(data[i]);
	}
	/* 3700 bytes from offset 333: head, 6 whole sectors, tail. */
	cr_assert_eq(img_pwritev(img, iov, N, 333), 0);
	for (int i = 0; i < N; i++)
		memset(shadow + 333 + i * 37, i + 1, 37);
	check_whole_image(img, shadow);
	for (int i = 0; i < N; i++)
		memset(data[i], 0, sizeof(data[i]));
	cr_assert_eq(img_preadv(img, iov, N, 333), 0);
	for (int i = 0; i < N; i++)
		for (int j = 0; j < 37; j++)
			cr_assert_eq(data[i][j], i + 1);
	/* write_zeroes with unaligned edges */
	cr_assert_eq(img_write_zeroes(img, 1000, 5000, 0), 0);
	memset(shadow + 1000, 0, 5000);
	check_whole_image(img, shadow);
	img_close(img);
}

/* More entries than preadv(2) takes at once (a long PRDT): any length is
 * taken, byte-aligned and through the sector read-modify-write path. */
Test(core, iovec_longer_than_iov_max)
{
	static uint8_t shadow[RMW_SIZE];
	enum { N = 3000, PIECE = 3 };
	static uint8_t data[N][PIECE];
	static struct iovec iov[N];

	for (int forced = 0; forced < 2; forced++) {
		struct img *img;

		make_pattern_file(path_in("a.img"), RMW_SIZE, shadow);
		img = open_path(path_in("a.img"), IMG_OPEN_RDWR);
		if (forced)
			img_test_force_sector_io(img);
		for (int i = 0; i < N; i++) {
			memset(data[i], (i * 7 + forced) & 0xff, PIECE);
			iov[i].iov_base = data[i];
			iov[i].iov_len = PIECE;
		}
		cr_assert_eq(img_pwritev(img, iov, N, 1024), 0, "%s",
			     img_errmsg(img));
		for (int i = 0; i < N; i++)
			memset(shadow + 1024 + i * PIECE,
			       (i * 7 + forced) & 0xff, PIECE);
		check_whole_image(img, shadow);
		memset(data, 0, sizeof(data));
		cr_assert_eq(img_preadv(img, iov, N, 1024), 0);
		for (int i = 0; i < N; i++)
			cr_assert_eq(data[i][PIECE - 1],
				     (i * 7 + forced) & 0xff);
		img_close(img);
	}
}

Test(core, uuid_and_random)
{
	uint8_t u[16] = { 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0,
			  0,	1,    2,    3,	  4,	5,    6,    7 };
	uint8_t r1[16], r2[16];
	char s[37];

	img_uuid_format(u, s);
	cr_assert_str_eq(s, "12345678-9abc-def0-0001-020304050607");
	img_random_bytes(r1, sizeof(r1));
	img_random_bytes(r2, sizeof(r2));
	cr_assert_neq(memcmp(r1, r2, 16), 0);
}

Test(core, check_note_limit)
{
	static struct img_check_result res;

	for (int i = 0; i < IMG_CHECK_MAX_MESSAGES + 10; i++)
		img_check_note(&res, "message %d", i);
	cr_assert_eq(res.nmessages, IMG_CHECK_MAX_MESSAGES);
	cr_assert_str_eq(res.messages[3], "message 3");
}

/* ---- create ----------------------------------------------------------------*/

Test(core, create_options)
{
	struct img_create_options co = { .format = "raw", .size = 1 << 20 };
	struct stat st;

	co.options = "bogus=1";
	cr_assert_eq(img_create(path_in("a.img"), &co, errbuf, sizeof(errbuf)),
		     -EINVAL);
	cr_assert(strstr(errbuf, "unknown option 'bogus' for format raw"), "%s",
		  errbuf);
	cr_assert_neq(stat(path_in("a.img"), &st), 0, "nothing written");
	co.options = "cluster_size=12Q";
	cr_assert_eq(img_create(path_in("a.img"), &co, errbuf, sizeof(errbuf)),
		     -EINVAL);
	co.options = "preallocation=sometimes";
	cr_assert_eq(img_create(path_in("a.img"), &co, errbuf, sizeof(errbuf)),
		     -EINVAL);
	co.options = "size=2M,preallocation=off";
	cr_assert_eq(img_create(path_in("a.img"), &co, errbuf, sizeof(errbuf)),
		     0, "%s", errbuf);
	cr_assert_eq(stat(path_in("a.img"), &st), 0);
	cr_assert_eq(st.st_size, 2 << 20);
	co.format = "qcow9";
	co.options = NULL;
	cr_assert_eq(img_create(path_in("b.img"), &co, errbuf, sizeof(errbuf)),
		     -EINVAL);
	cr_assert(strstr(errbuf, "unknown format 'qcow9'"), "%s", errbuf);
	co.format = "raw";
	co.flags = IMG_CREATE_EXCL;
	cr_assert_eq(img_create(path_in("a.img"), &co, errbuf, sizeof(errbuf)),
		     -EEXIST);
}

/* ---- I/O hook ----------------------------------------------------------------*/

static int hook_calls[4];
static int hook_fail_op = -1;

static int test_hook(enum img_io_op op, int fd, uint64_t off, uint64_t len,
		     void *opaque)
{
	(void)fd;
	(void)off;
	(void)len;
	(void)opaque;
	hook_calls[op]++;
	return (int)op == hook_fail_op ? -EIO : 0;
}

Test(core, io_hook_sees_and_fails_writes)
{
	struct img *img;
	char buf[4096] = { 1 };

	make_pattern_file(path_in("a.img"), 65536, NULL);
	img = open_path(path_in("a.img"), IMG_OPEN_RDWR);
	img_set_io_hook(test_hook, NULL);
	cr_assert_eq(img_pwrite(img, buf, sizeof(buf), 0), 0);
	cr_assert_eq(img_flush(img), 0);
	cr_assert_eq(hook_calls[IMG_IO_WRITE], 1);
	cr_assert_eq(hook_calls[IMG_IO_SYNC], 1);
	hook_fail_op = IMG_IO_WRITE;
	cr_assert_eq(img_pwrite(img, buf, sizeof(buf), 4096), -EIO);
	cr_assert(strstr(img_errmsg(img), "Input/output error"), "%s",
		  img_errmsg(img));
	hook_fail_op = IMG_IO_SYNC;
	cr_assert_eq(img_flush(img), -EIO);
	cr_assert_eq(img_close(img), -EIO, "close reports the flush error");
	hook_fail_op = -1;
}

/* ---- threads -------------------------------------------------------------------*/

struct thread_arg {
	struct img *img;
	int id;
	int errors;
};

static void *hammer(void *p)
{
	struct thread_arg *a = p;
	uint8_t buf[4096], got[4096];

	for (int i = 0; i < 200; i++) {
		/* Each thread owns its own 4 KiB slots: slot = id + 8k. */
		uint64_t off = (uint64_t)(a->id + 8 * (i % 16)) * 4096;

		memset(buf, a->id * 16 + i % 16, sizeof(buf));
		if (img_pwrite(a->img, buf, sizeof(buf), off) < 0 ||
		    img_pread(a->img, got, sizeof(got), off) < 0 ||
		    memcmp(buf, got, sizeof(buf)) != 0)
			a->errors++;
	}
	return NULL;
}

Test(core, concurrent_readers_and_writers)
{
	pthread_t t[8];
	struct thread_arg args[8];
	struct img *img;

	make_pattern_file(path_in("a.img"), 8 * 16 * 4096, NULL);
	img = open_path(path_in("a.img"), IMG_OPEN_RDWR);
	for (int i = 0; i < 8; i++) {
		args[i] = (struct thread_arg){ .img = img, .id = i };
		pthread_create(&t[i], NULL, hammer, &args[i]);
	}
	for (int i = 0; i < 8; i++) {
		pthread_join(t[i], NULL);
		cr_assert_eq(args[i].errors, 0, "thread %d", i);
	}
	img_close(img);
}

static int fail_truncate(enum img_io_op op, int fd, uint64_t off, uint64_t len,
			 void *opaque)
{
	(void)fd;
	(void)off;
	(void)len;
	(void)opaque;
	return op == IMG_IO_TRUNCATE ? -ENOSPC : 0;
}

Test(core, failed_create_leaves_nothing_behind)
{
	struct img_create_options co = { .format = "raw", .size = 1 << 20 };
	struct stat st;

	make_pattern_file(path_in("old.img"), 8192, NULL);
	img_set_io_hook(fail_truncate, NULL);
	cr_assert_eq(img_create(path_in("new.img"), &co, errbuf,
				sizeof(errbuf)),
		     -ENOSPC);
	cr_assert(strstr(errbuf, "No space left on device"), "%s", errbuf);
	cr_assert_neq(stat(path_in("new.img"), &st), 0, "removed");
	/* An existing file is not deleted (and here not even truncated). */
	cr_assert_eq(img_create(path_in("old.img"), &co, errbuf,
				sizeof(errbuf)),
		     -ENOSPC);
	cr_assert_eq(stat(path_in("old.img"), &st), 0);
	cr_assert_eq(st.st_size, 8192);
	img_set_io_hook(NULL, NULL);
}

/* ---- errors from several threads ---------------------------------------*/

struct error_thread {
	struct img *img;
	uint64_t off; /* a read past the end at this offset fails */
	bool own_message;
};

static void *error_thread_main(void *opaque)
{
	struct error_thread *t = opaque;
	char want[64];
	uint8_t b;

	snprintf(want, sizeof(want), "at offset %llu ",
		 (unsigned long long)t->off);
	t->own_message = true;
	for (int i = 0; i < 20000 && t->own_message; i++) {
		if (img_pread(t->img, &b, 1, t->off) == 0 ||
		    !strstr(img_errmsg(t->img), want))
			t->own_message = false;
	}
	return NULL;
}

Test(core, each_thread_reads_its_own_error)
{
	struct error_thread t[2];
	pthread_t th[2];
	struct img *img;

	make_pattern_file(path_in("a.img"), 4096, NULL);
	img = open_path(path_in("a.img"), IMG_OPEN_RDONLY);
	for (int i = 0; i < 2; i++) {
		t[i] = (struct error_thread){ .img = img, .off = 5000 + i };
		cr_assert_eq(pthread_create(&th[i], NULL, error_thread_main,
					    &t[i]),
			     0);
	}
	for (int i = 0; i < 2; i++) {
		pthread_join(th[i], NULL);
		cr_expect(t[i].own_message,
			  "thread %d saw another thread's message", i);
	}
	/* a thread that did not fail sees the handle's last message */
	cr_expect_neq(strstr(img_errmsg(img), "beyond the end"), NULL);
	img_close(img);
}

Test(core, relative_paths)
{
	static const struct {
		const char *dir, *target, *want;
		int ups;
	} cases[] = {
		{ "/a/b", "/a/b/c", "c", 0 },
		{ "/a/b", "/a/c/d", "../c/d", 1 },
		{ "/a/b", "/a/bc/d", "../bc/d", 1 },
		{ "/", "/x", "x", 0 },
		{ "/a", "/ab/c", "../ab/c", 1 },
		{ "/a/b/c", "/x", "../../../x", 3 },
	};
	char out[64];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cr_expect_eq(img_path_relative(cases[i].dir, cases[i].target,
					       out, sizeof(out)),
			     cases[i].ups, "%s -> %s", cases[i].dir,
			     cases[i].target);
		cr_expect_str_eq(out, cases[i].want);
	}
	cr_expect_eq(img_path_relative("/a/b/c", "/x", out, 8), -ENAMETOOLONG);
}
