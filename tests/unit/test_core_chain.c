/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the core's backing-chain code: finding, matching and
 * opening parents, loops, identity search, reads and block status through
 * the chain.  The chain needs a format that records a parent, so this file
 * carries "tcow", a deliberately tiny copy-on-write format registered as
 * the core's test driver: a 512-byte header, then the virtual disk at
 * offset 4096 in a sparse file, where a host hole means "not allocated
 * here, read the parent".
 */
#include "driver.h"
#include "internal.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- the tcow test format ----------------------------------------------*/

#define TCOW_DATA 4096
#define TCOW_FLAG_BY_IDENTITY 1u /* parent recorded by UUID only */

struct tcow_header {
	char magic[8]; /* "IMGTCOW1" */
	uint64_t size;
	uint8_t uuid[16];
	uint8_t parent_uuid[16];
	uint32_t flags;
	char parent_format[16];
	char parent[256];
} __attribute__((packed));

struct tcow_state {
	struct img_file file;
	struct tcow_header h;
};

static int tcow_probe(const uint8_t *head, size_t head_len, uint64_t size,
		      struct img_file *f)
{
	(void)size;
	(void)f;
	return head_len >= 8 && memcmp(head, "IMGTCOW1", 8) == 0 ? 100 : 0;
}

static int tcow_create(const struct img_create_args *a, char *errbuf,
		       size_t errlen)
{
	struct tcow_header h = { .magic = "IMGTCOW1", .size = a->size };
	struct img_file f;
	int r;

	img_random_bytes(h.uuid, sizeof(h.uuid));
	if (a->backing_file) {
		snprintf(h.parent, sizeof(h.parent), "%s", a->backing_file);
		if (a->backing_format)
			snprintf(h.parent_format, sizeof(h.parent_format), "%s",
				 a->backing_format);
		if (a->backing && strcmp(img_format(a->backing), "tcow") == 0) {
			struct tcow_state *ps = img_state(a->backing);

			memcpy(h.parent_uuid, ps->h.uuid, 16);
		}
	}
	if (img_create_arg(a, "by_identity"))
		h.flags |= TCOW_FLAG_BY_IDENTITY;
	r = img_file_create(&f, a->path, a->excl, errbuf, errlen);
	if (r < 0)
		return r;
	r = img_file_pwrite(&f, &h, sizeof(h), 0);
	if (r == 0)
		r = img_file_truncate(&f, TCOW_DATA + a->size);
	img_file_close(&f);
	return r;
}

static int tcow_open(struct img *img)
{
	struct tcow_state *s = img_state(img);
	int r;

	r = img_file_open(img, &s->file, img_filename(img),
			  img_open_flags(img) & IMG_OPEN_RDWR);
	if (r < 0)
		return r;
	r = img_file_pread(&s->file, &s->h, sizeof(s->h), 0);
	if (r < 0 || memcmp(s->h.magic, "IMGTCOW1", 8) != 0) {
		img_file_close(&s->file);
		return img_error(img, -EINVAL, "not a tcow image");
	}
	img_set_size(img, s->h.size);
	s->h.parent[sizeof(s->h.parent) - 1] = '\0';
	s->h.parent_format[sizeof(s->h.parent_format) - 1] = '\0';
	if (s->h.flags & TCOW_FLAG_BY_IDENTITY)
		img_set_backing_by_identity(img, "tcow");
	else if (s->h.parent[0])
		img_add_backing_candidate(
			img, s->h.parent,
			s->h.parent_format[0] ? s->h.parent_format : NULL);
	return 0;
}

static void tcow_close(struct img *img)
{
	struct tcow_state *s = img_state(img);

	img_file_close(&s->file);
}

static int tcow_preadv(struct img *img, uint64_t off, const struct iovec *iov,
		       int iovcnt, size_t len)
{
	struct tcow_state *s = img_state(img);
	size_t pos = 0;

	while (pos < len) {
		struct iovec part[64];
		uint64_t run;
		bool data;
		int n, r;

		r = img_file_extent(&s->file, TCOW_DATA + off + pos, len - pos,
				    &data, &run);
		if (r < 0)
			return r;
		n = img_iov_slice(iov, iovcnt, pos, run, part, 64);
		if (n < 0)
			return n;
		if (data)
			r = img_file_preadv(&s->file, part, n,
					    TCOW_DATA + off + pos);
		else
			r = img_read_backing(img, off + pos, part, n, run);
		if (r < 0)
			return r;
		pos += run;
	}
	return 0;
}

static int tcow_pwritev(struct img *img, uint64_t off, const struct iovec *iov,
			int iovcnt, size_t len)
{
	struct tcow_state *s = img_state(img);

	(void)len;
	return img_file_pwritev(&s->file, iov, iovcnt, TCOW_DATA + off);
}

static int tcow_flush(struct img *img)
{
	struct tcow_state *s = img_state(img);

	return img_file_sync(&s->file);
}

static int tcow_block_status(struct img *img, uint64_t off, uint64_t len,
			     struct img_extent *ext)
{
	struct tcow_state *s = img_state(img);
	uint64_t run;
	bool data;
	int r = img_file_extent(&s->file, TCOW_DATA + off, len, &data, &run);

	if (r < 0)
		return r;
	ext->length = run;
	ext->flags = data ? IMG_EXTENT_DATA | IMG_EXTENT_ALLOCATED : 0;
	ext->depth = data ? 0 : -1;
	return 0;
}

static int tcow_backing_matches(struct img *img, struct img *parent)
{
	struct tcow_state *s = img_state(img);
	static const uint8_t none[16];
	struct tcow_state *ps;

	if (memcmp(s->h.parent_uuid, none, 16) == 0)
		return 0;
	if (strcmp(img_format(parent), "tcow") != 0)
		return img_error(img, -ESTALE,
				 "parent %s does not match: not a tcow image",
				 img_filename(parent));
	ps = img_state(parent);
	if (memcmp(ps->h.uuid, s->h.parent_uuid, 16) != 0)
		return img_error(img, -ESTALE,
				 "parent %s does not match: UUID differs",
				 img_filename(parent));
	return 0;
}

static int tcow_set_backing(struct img *img, const char *file,
			    const char *format, struct img *parent)
{
	struct tcow_state *s = img_state(img);

	memset(s->h.parent, 0, sizeof(s->h.parent));
	memset(s->h.parent_format, 0, sizeof(s->h.parent_format));
	memset(s->h.parent_uuid, 0, sizeof(s->h.parent_uuid));
	if (file)
		snprintf(s->h.parent, sizeof(s->h.parent), "%s", file);
	if (format)
		snprintf(s->h.parent_format, sizeof(s->h.parent_format), "%s",
			 format);
	if (parent && strcmp(img_format(parent), "tcow") == 0)
		memcpy(s->h.parent_uuid,
		       ((struct tcow_state *)img_state(parent))->h.uuid, 16);
	return img_file_pwrite(&s->file, &s->h, sizeof(s->h), 0);
}

static const char *const tcow_options[] = { "by_identity", NULL };

static const struct img_driver tcow_driver = {
	.name = "tcow",
	.description = "test copy-on-write",
	.flags = IMG_DRV_BYTE_ALIGNED,
	.state_size = sizeof(struct tcow_state),
	.create_options = tcow_options,
	.probe = tcow_probe,
	.create = tcow_create,
	.open = tcow_open,
	.close = tcow_close,
	.preadv = tcow_preadv,
	.pwritev = tcow_pwritev,
	.flush = tcow_flush,
	.block_status = tcow_block_status,
	.backing_matches = tcow_backing_matches,
	.set_backing = tcow_set_backing,
};

/* ---- fixtures --------------------------------------------------------------*/

static char dir[64];
static char errbuf[IMG_ERRMSG_MAX];

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/test_chain.XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	img_test_set_extra_driver(&tcow_driver);
}

static void teardown(void)
{
	char cmd[128];

	img_test_set_extra_driver(NULL);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	cr_expect_eq(system(cmd), 0);
}

TestSuite(chain, .init = setup, .fini = teardown);

static const char *path_in(const char *name)
{
	static char buf[8][256];
	static int next;
	char *p = buf[next++ % 8];

	snprintf(p, 256, "%s/%s", dir, name);
	return p;
}

static void create(const char *name, const char *format, uint64_t size,
		   const char *backing, const char *options)
{
	struct img_create_options co = { .format = format,
					 .size = size,
					 .backing_file = backing,
					 .options = options };

	cr_assert_eq(img_create(path_in(name), &co, errbuf, sizeof(errbuf)), 0,
		     "create %s: %s", name, errbuf);
}

static int try_open(struct img **img, const char *name, unsigned flags)
{
	struct img_open_options o = { .flags = flags };

	return img_open(img, path_in(name), &o, errbuf, sizeof(errbuf));
}

static struct img *open_ok(const char *name, unsigned flags)
{
	struct img *img;

	cr_assert_eq(try_open(&img, name, flags), 0, "open %s: %s", name,
		     errbuf);
	return img;
}

static void fill(const char *name, uint64_t off, size_t len, int c)
{
	struct img *img = open_ok(name, IMG_OPEN_RDWR | IMG_OPEN_NO_BACKING);
	char *buf = malloc(len);

	cr_assert_not_null(buf);
	memset(buf, c, len);
	cr_assert_eq(img_pwrite(img, buf, len, off), 0, "%s", img_errmsg(img));
	free(buf);
	cr_assert_eq(img_close(img), 0);
}

static void expect_bytes(struct img *img, uint64_t off, size_t len, int c)
{
	unsigned char *buf = malloc(len);

	cr_assert_not_null(buf);
	cr_assert_eq(img_pread(img, buf, len, off), 0, "%s", img_errmsg(img));
	for (size_t i = 0; i < len; i++)
		if (buf[i] != (unsigned char)c)
			cr_assert_fail("byte %llu is %#x, want %#x",
				       (unsigned long long)(off + i), buf[i],
				       (unsigned char)c);
	free(buf);
}

static void expect_extent(struct img *img, uint64_t off, uint64_t len,
			  uint64_t want_len, int want_depth,
			  unsigned want_flags)
{
	struct img_extent e;

	cr_assert_eq(img_block_status(img, off, len, &e), 0, "%s",
		     img_errmsg(img));
	cr_assert_eq(e.start, off);
	cr_assert_eq(e.length, want_len, "at %llu: length %llu, want %llu",
		     (unsigned long long)off, (unsigned long long)e.length,
		     (unsigned long long)want_len);
	cr_assert_eq(e.depth, want_depth, "at %llu: depth %d, want %d",
		     (unsigned long long)off, e.depth, want_depth);
	cr_assert_eq(e.flags, want_flags, "at %llu: flags %#x, want %#x",
		     (unsigned long long)off, e.flags, want_flags);
}

#define MiB (1ull << 20)
#define DA (IMG_EXTENT_DATA | IMG_EXTENT_ALLOCATED)

/* base (tcow, 4 MiB: 0xAA in [0,2M)) <- mid (0xBB in [1M,2M)) <- top
 * (0xCC in [3M,4M)) */
static void make_three_layers(void)
{
	create("base.tcow", "tcow", 4 * MiB, NULL, NULL);
	fill("base.tcow", 0, 2 * MiB, 0xAA);
	create("mid.tcow", "tcow", 0, "base.tcow", NULL);
	fill("mid.tcow", 1 * MiB, 1 * MiB, 0xBB);
	create("top.tcow", "tcow", 0, "mid.tcow", NULL);
	fill("top.tcow", 3 * MiB, 1 * MiB, 0xCC);
}

/* ---- tests ---------------------------------------------------------------*/

Test(chain, reads_fall_through_layers)
{
	struct img *top;

	make_three_layers();
	top = open_ok("top.tcow", IMG_OPEN_RDONLY);
	cr_assert_eq(img_size(top), 4 * MiB, "size taken from the parent");
	cr_assert_not_null(img_backing(top));
	cr_assert_not_null(img_backing(img_backing(top)));
	cr_assert_null(img_backing(img_backing(img_backing(top))));
	expect_bytes(top, 0, 1 * MiB, 0xAA);
	expect_bytes(top, 1 * MiB, 1 * MiB, 0xBB);
	expect_bytes(top, 2 * MiB, 1 * MiB, 0);
	expect_bytes(top, 3 * MiB, 1 * MiB, 0xCC);
	/* One read across all layers. */
	expect_bytes(top, 1 * MiB - 10, 10, 0xAA);
	img_close(top);
}

Test(chain, block_status_resolves_depth)
{
	struct img *top;

	make_three_layers();
	top = open_ok("top.tcow", IMG_OPEN_RDONLY);
	expect_extent(top, 0, 4 * MiB, 1 * MiB, 2, DA);
	expect_extent(top, 1 * MiB, 3 * MiB, 1 * MiB, 1, DA);
	expect_extent(top, 2 * MiB, 2 * MiB, 1 * MiB, -1, IMG_EXTENT_ZERO);
	expect_extent(top, 3 * MiB, 1 * MiB, 1 * MiB, 0, DA);
	/* The layer-only view stops at the top. */
	{
		struct img_extent e;

		cr_assert_eq(img_block_status_layer(top, 0, 4 * MiB, &e), 0);
		cr_assert_eq(e.depth, -1);
		cr_assert_eq(e.length, 3 * MiB);
	}
	img_close(top);
}

Test(chain, writes_stay_in_the_top_layer)
{
	struct img *top, *base;
	char buf[4096];

	make_three_layers();
	top = open_ok("top.tcow", IMG_OPEN_RDWR);
	memset(buf, 0xDD, sizeof(buf));
	cr_assert_eq(img_pwrite(top, buf, sizeof(buf), 8192), 0);
	/* Parents are read-only with shared locks: nobody may write them
	 * while the child is open, not even this process. */
	cr_assert_eq(try_open(&base, "base.tcow", IMG_OPEN_RDWR), -EBUSY);
	img_close(top);
	base = open_ok("base.tcow", IMG_OPEN_RDONLY);
	expect_bytes(base, 8192, 4096, 0xAA);
	img_close(base);
	top = open_ok("top.tcow", IMG_OPEN_RDONLY);
	expect_bytes(top, 8192, 4096, 0xDD);
	expect_bytes(top, 0, 8192, 0xAA);
	img_close(top);
}

Test(chain, parent_shorter_than_child_reads)
{
	struct img *top;
	unsigned char buf[1024];

	create("base.tcow", "tcow", 1 * MiB, NULL, NULL);
	fill("base.tcow", 0, 1 * MiB, 0x11);
	create("top.tcow", "tcow", 3 * MiB, "base.tcow", NULL);
	top = open_ok("top.tcow", IMG_OPEN_RDONLY);
	cr_assert_eq(img_pread(top, buf, sizeof(buf), 1 * MiB - 512), 0);
	for (int i = 0; i < 512; i++)
		cr_assert_eq(buf[i], 0x11);
	for (int i = 512; i < 1024; i++)
		cr_assert_eq(buf[i], 0);
	expect_extent(top, 0, 3 * MiB, 1 * MiB, 1, DA);
	expect_extent(top, 1 * MiB, 2 * MiB, 2 * MiB, -1, IMG_EXTENT_ZERO);
	img_close(top);
}

Test(chain, missing_parent_is_named)
{
	struct img *top;
	char want[512];

	create("base.tcow", "tcow", 1 * MiB, NULL, NULL);
	create("top.tcow", "tcow", 0, "base.tcow", NULL);
	cr_assert_eq(unlink(path_in("base.tcow")), 0);
	cr_assert_eq(try_open(&top, "top.tcow", IMG_OPEN_RDONLY), -ENOENT);
	snprintf(want, sizeof(want), "%s: its parent %s does not exist",
		 path_in("top.tcow"), path_in("base.tcow"));
	cr_assert_str_eq(errbuf, want);
	/* Without the chain it opens, reads zeros and still says where the
	 * parent would be. */
	top = open_ok("top.tcow", IMG_OPEN_RDONLY | IMG_OPEN_NO_BACKING);
	expect_bytes(top, 0, 4096, 0);
	{
		struct img_info *info = NULL;

		img_info_free(info);
		cr_assert_eq(img_get_info(top, &info), 0);
		cr_assert_str_eq(info->backing_filename, "base.tcow");
		cr_assert_str_eq(info->backing_full, path_in("base.tcow"));
		img_info_free(info);
	}
	img_close(top);
}

Test(chain, broken_parent_is_reported)
{
	struct img *top;
	int fd;

	create("base.tcow", "tcow", 1 * MiB, NULL, NULL);
	create("top.tcow", "tcow", 0, "base.tcow", NULL);
	fd = open(path_in("base.tcow"), O_WRONLY);
	cr_assert_eq(pwrite(fd, "XXXX", 4, 0), 4);
	close(fd);
	/* The child recorded the parent's format: opening it as that
	 * fails, and the message says which layer. */
	cr_assert_eq(try_open(&top, "top.tcow", IMG_OPEN_RDONLY), -EINVAL);
	cr_assert(strstr(errbuf, "cannot open its parent"), "%s", errbuf);
	cr_assert(strstr(errbuf, "base.tcow: not a tcow image"), "%s", errbuf);
}

Test(chain, mismatch_refused_unless_forced)
{
	struct img *top;

	create("base.tcow", "tcow", 1 * MiB, NULL, NULL);
	create("top.tcow", "tcow", 0, "base.tcow", NULL);
	/* A different image under the same name. */
	create("base.tcow", "tcow", 1 * MiB, NULL, NULL);
	cr_assert_eq(try_open(&top, "top.tcow", IMG_OPEN_RDWR), -ESTALE);
	cr_assert(strstr(errbuf, "top.tcow: parent"), "%s", errbuf);
	cr_assert(strstr(errbuf, "UUID differs"), "%s", errbuf);
	top = open_ok("top.tcow", IMG_OPEN_RDWR | IMG_OPEN_FORCE);
	cr_assert_not(img_is_writable(top), "forced opens are read-only");
	cr_assert_not_null(img_backing(top));
	img_close(top);
}

Test(chain, backing_override)
{
	struct img_open_options o = { .flags = IMG_OPEN_RDONLY };
	struct img *top;

	create("base.tcow", "tcow", 1 * MiB, NULL, NULL);
	fill("base.tcow", 0, 4096, 0x42);
	create("top.tcow", "tcow", 0, "base.tcow", NULL);
	cr_assert_eq(mkdir(path_in("moved"), 0755), 0);
	cr_assert_eq(rename(path_in("base.tcow"), path_in("moved/b.tcow")), 0);
	o.backing_path = path_in("moved/b.tcow");
	cr_assert_eq(img_open(&top, path_in("top.tcow"), &o, errbuf,
			      sizeof(errbuf)),
		     0, "%s", errbuf);
	expect_bytes(top, 0, 4096, 0x42);
	img_close(top);
}

Test(chain, relative_parent_resolves_against_child_dir)
{
	struct img *top;

	cr_assert_eq(mkdir(path_in("sub"), 0755), 0);
	create("base.tcow", "tcow", 1 * MiB, NULL, NULL);
	fill("base.tcow", 0, 4096, 0x77);
	/* backing_file is relative to the new image's directory */
	create("sub/top.tcow", "tcow", 0, "../base.tcow", NULL);
	cr_assert_eq(chdir("/"), 0);
	top = open_ok("sub/top.tcow", IMG_OPEN_RDONLY);
	expect_bytes(top, 0, 4096, 0x77);
	cr_assert_eq(img_size(top), 1 * MiB);
	img_close(top);
}

Test(chain, raw_parent)
{
	struct img *top;
	int fd;

	fd = open(path_in("base.raw"), O_CREAT | O_WRONLY, 0644);
	cr_assert_eq(ftruncate(fd, 2 * MiB), 0);
	cr_assert_eq(pwrite(fd, "parent", 6, 1000), 6);
	close(fd);
	create("top.tcow", "tcow", 0, "base.raw", NULL);
	top = open_ok("top.tcow", IMG_OPEN_RDONLY);
	cr_assert_str_eq(img_format(img_backing(top)), "raw");
	{
		char buf[6];

		cr_assert_eq(img_pread(top, buf, 6, 1000), 0);
		cr_assert_eq(memcmp(buf, "parent", 6), 0);
	}
	img_close(top);
}

Test(chain, loops_are_refused)
{
	struct img *img;

	/* b -> a, then a replaced by an image whose parent is b. */
	create("a.tcow", "tcow", 1 * MiB, NULL, NULL);
	create("b.tcow", "tcow", 0, "a.tcow", NULL);
	create("a2.tcow", "tcow", 0, "b.tcow", NULL);
	cr_assert_eq(rename(path_in("a2.tcow"), path_in("a.tcow")), 0);
	/* b's recorded parent UUID no longer matches a ... */
	cr_assert_eq(try_open(&img, "b.tcow", IMG_OPEN_RDONLY), -ESTALE, "%s",
		     errbuf);
	/* ... and forcing past that hits the loop. */
	cr_assert_eq(try_open(&img, "b.tcow", IMG_OPEN_RDONLY | IMG_OPEN_FORCE),
		     -ELOOP, "%s", errbuf);
	cr_assert(strstr(errbuf, "loops back"), "%s", errbuf);
}

Test(chain, self_reference_is_refused)
{
	struct img *img;

	create("a.tcow", "tcow", 1 * MiB, NULL, NULL);
	create("self.tcow", "tcow", 0, "a.tcow", NULL);
	cr_assert_eq(rename(path_in("self.tcow"), path_in("a.tcow")), 0);
	/* a.tcow now records "a.tcow" as its parent. */
	cr_assert_eq(try_open(&img, "a.tcow", IMG_OPEN_RDONLY | IMG_OPEN_FORCE),
		     -ELOOP, "%s", errbuf);
}

Test(chain, deep_chain_limit)
{
	char name[32], parent[32];
	struct img *img;

	create("l0.tcow", "tcow", 64 * 1024, NULL, NULL);
	for (int i = 1; i <= 64; i++) {
		snprintf(name, sizeof(name), "l%d.tcow", i);
		snprintf(parent, sizeof(parent), "l%d.tcow", i - 1);
		create(name, "tcow", 0, parent, NULL);
	}
	/* 64 layers open, 65 do not. */
	img = open_ok("l63.tcow", IMG_OPEN_RDONLY);
	img_close(img);
	cr_assert_eq(try_open(&img, "l64.tcow", IMG_OPEN_RDONLY), -ELOOP);
	cr_assert(strstr(errbuf, "deeper than"), "%s", errbuf);
}

Test(chain, parent_found_by_identity)
{
	struct img *top;

	create("base.tcow", "tcow", 1 * MiB, NULL, NULL);
	fill("base.tcow", 0, 4096, 0x99);
	create("decoy.tcow", "tcow", 1 * MiB, NULL, NULL);
	create("top.tcow", "tcow", 0, "base.tcow", "by_identity");
	top = open_ok("top.tcow", IMG_OPEN_RDONLY);
	cr_assert_str_eq(img_filename(img_backing(top)), path_in("base.tcow"));
	expect_bytes(top, 0, 4096, 0x99);
	img_close(top);
}

Test(chain, parent_found_in_snapshots_dir_and_search_dirs)
{
	const char *dirs[] = { NULL, NULL };
	struct img_open_options o = { .flags = IMG_OPEN_RDONLY,
				      .search_dirs = dirs };
	struct img *top;

	create("base.tcow", "tcow", 1 * MiB, NULL, NULL);
	create("top.tcow", "tcow", 0, "base.tcow", "by_identity");
	cr_assert_eq(mkdir(path_in("top.tcow.snapshots"), 0755), 0);
	cr_assert_eq(rename(path_in("base.tcow"),
			    path_in("top.tcow.snapshots/{1234}.tcow")),
		     0);
	top = open_ok("top.tcow", IMG_OPEN_RDONLY);
	cr_assert_str_eq(img_filename(img_backing(top)),
			 path_in("top.tcow.snapshots/{1234}.tcow"));
	img_close(top);

	cr_assert_eq(mkdir(path_in("elsewhere"), 0755), 0);
	cr_assert_eq(rename(path_in("top.tcow.snapshots/{1234}.tcow"),
			    path_in("elsewhere/p.tcow")),
		     0);
	cr_assert_eq(try_open(&top, "top.tcow", IMG_OPEN_RDONLY), -ENOENT);
	cr_assert(strstr(errbuf, "cannot find its parent"), "%s", errbuf);
	dirs[0] = path_in("elsewhere");
	cr_assert_eq(img_open(&top, path_in("top.tcow"), &o, errbuf,
			      sizeof(errbuf)),
		     0, "%s", errbuf);
	img_close(top);
}

Test(chain, create_takes_parent_size_and_format)
{
	struct img_create_options co = { .format = "tcow",
					 .backing_file = "missing.tcow" };
	struct img *top;

	create("base.tcow", "tcow", 3 * MiB, NULL, NULL);
	create("top.tcow", "tcow", 0, "base.tcow", NULL);
	top = open_ok("top.tcow", IMG_OPEN_RDONLY | IMG_OPEN_NO_BACKING);
	cr_assert_eq(img_size(top), 3 * MiB);
	img_close(top);
	cr_assert_eq(img_create(path_in("x.tcow"), &co, errbuf, sizeof(errbuf)),
		     -ENOENT);
	cr_assert(strstr(errbuf, "cannot open backing file"), "%s", errbuf);
	cr_assert_eq(access(path_in("x.tcow"), F_OK), -1, "nothing written");
}

Test(chain, info_names_the_parent)
{
	struct img_info *info = NULL;
	struct img *top;

	make_three_layers();
	top = open_ok("top.tcow", IMG_OPEN_RDONLY);
	img_info_free(info);
	cr_assert_eq(img_get_info(top, &info), 0);
	cr_assert_str_eq(info->backing_filename, "mid.tcow");
	cr_assert_str_eq(info->backing_full, path_in("mid.tcow"));
	cr_assert_str_eq(info->backing_format, "tcow");
	img_info_free(info);
	img_close(top);
}

Test(chain, set_backing_rewrites_the_reference)
{
	struct img_info *info = NULL;
	struct img *top, *other;

	make_three_layers();
	/* rebase -u: top now sits on base directly */
	top = open_ok("top.tcow", IMG_OPEN_RDWR | IMG_OPEN_NO_BACKING);
	other = open_ok("base.tcow", IMG_OPEN_RDONLY);
	cr_assert_eq(img_set_backing(top, "base.tcow", "tcow", other), 0, "%s",
		     img_errmsg(top));
	img_info_free(info);
	cr_assert_eq(img_get_info(top, &info), 0);
	cr_assert_str_eq(info->backing_filename, "base.tcow");
	cr_assert_str_eq(info->backing_full, path_in("base.tcow"));
	img_close(other);
	img_close(top);
	top = open_ok("top.tcow", IMG_OPEN_RDONLY);
	cr_assert_str_eq(img_filename(img_backing(top)), path_in("base.tcow"));
	expect_bytes(top, 1 * MiB, 1 * MiB, 0xAA); /* mid's 0xBB is gone */
	img_close(top);
	/* and standalone */
	top = open_ok("top.tcow", IMG_OPEN_RDWR | IMG_OPEN_NO_BACKING);
	cr_assert_eq(img_set_backing(top, NULL, NULL, NULL), 0);
	img_info_free(info);
	cr_assert_eq(img_get_info(top, &info), 0);
	cr_assert_str_eq(info->backing_filename, "");
	img_close(top);
	top = open_ok("top.tcow", IMG_OPEN_RDONLY);
	cr_assert_null(img_backing(top));
	expect_bytes(top, 0, 1 * MiB, 0);
	img_close(top);
	img_info_free(info);
}

Test(chain, parent_found_above_a_virtualbox_snapshots_dir)
{
	struct img *top;

	create("base.tcow", "tcow", 1 * MiB, NULL, NULL);
	cr_assert_eq(mkdir(path_in("Snapshots"), 0755), 0);
	create("Snapshots/{5678}.tcow", "tcow", 0, "../base.tcow",
	       "by_identity");
	top = open_ok("Snapshots/{5678}.tcow", IMG_OPEN_RDONLY);
	cr_assert_str_eq(img_filename(img_backing(top)),
			 path_in("Snapshots/../base.tcow"));
	img_close(top);
}
