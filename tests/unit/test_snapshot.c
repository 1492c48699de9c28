/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for libimg's snapshot module (libimg/snapshot.c): create,
 * list, revert, delete and reading a snapshot on VDI, VHD, VMDK (layers in
 * DISK.snapshots/) and qcow2 (internal snapshots) through the one API;
 * the error cases (unknown, duplicate and invalid tags, read-only handles,
 * a disk in use, a format without snapshots); an interrupted operation
 * refused by readers and finished by recovery; failures injected at every
 * directory change leave the disk and its list as they were.
 */
#include "img.h"

#define TMPDIR_PREFIX "/tmp/test_snapshot"
#include "unit_tmpdir.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DISK_SIZE (4u << 20)
#define PATTERN_LEN (256u << 10)

static char disk[128];

static void setup(void)
{
	make_tmpdir();
}

static void teardown(void)
{
	img_set_io_hook(NULL, NULL);
	remove_tmpdir();
}

static void make_disk(const char *format)
{
	struct img_create_options co = { .format = format, .size = DISK_SIZE };
	char err[IMG_ERRMSG_MAX], name[32];

	snprintf(name, sizeof(name), "disk.%s", format);
	snprintf(disk, sizeof(disk), "%s", tmp_path(name));
	cr_assert_eq(img_create(disk, &co, err, sizeof(err)), 0, "%s", err);
}

/* Fill [off, off+PATTERN_LEN) of the disk with byte. */
static void write_pattern(uint64_t off, int byte)
{
	struct img_open_options oo = { .flags = IMG_OPEN_RDWR };
	char err[IMG_ERRMSG_MAX];
	static uint8_t buf[PATTERN_LEN];
	struct img *img;

	cr_assert_eq(img_open(&img, disk, &oo, err, sizeof(err)), 0, "%s", err);
	memset(buf, byte, sizeof(buf));
	cr_assert_eq(img_pwrite(img, buf, sizeof(buf), off), 0, "%s",
		     img_errmsg(img));
	cr_assert_eq(img_close(img), 0);
}

/* Does every byte of [off, off+PATTERN_LEN) read as byte? */
static bool image_reads(struct img *img, uint64_t off, int byte)
{
	static uint8_t buf[PATTERN_LEN];

	cr_assert_eq(img_pread(img, buf, sizeof(buf), off), 0, "%s",
		     img_errmsg(img));
	for (size_t i = 0; i < sizeof(buf); i++)
		if (buf[i] != byte)
			return false;
	return true;
}

static bool disk_reads(uint64_t off, int byte)
{
	struct img_open_options oo = { .flags = IMG_OPEN_RDONLY };
	char err[IMG_ERRMSG_MAX];
	struct img *img;
	bool same;

	cr_assert_eq(img_open(&img, disk, &oo, err, sizeof(err)), 0, "%s", err);
	same = image_reads(img, off, byte);
	img_close(img);
	return same;
}

static void disk_checks_clean(void)
{
	struct img_open_options oo = { .flags = IMG_OPEN_RDONLY |
						IMG_OPEN_CHECK |
						IMG_OPEN_NO_BACKING };
	struct img_check_result res = { 0 };
	char err[IMG_ERRMSG_MAX];
	struct img *img;

	cr_assert_eq(img_open(&img, disk, &oo, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(img_check(img, &res, 0), 0);
	cr_assert_eq(res.corruptions + res.leaks, 0, "%s",
		     res.nmessages ? res.messages[0] : "");
	img_close(img);
}

static struct img_snapshots *snaps_open(unsigned flags)
{
	struct img_snapshots *s;
	char err[IMG_ERRMSG_MAX];

	cr_assert_eq(img_snapshots_open(&s, disk, NULL, flags, err,
					sizeof(err)),
		     0, "%s", err);
	return s;
}

/* The snapshot names, newest first, joined by spaces. */
static void list_names(char *out, size_t len)
{
	struct img_snapshots *s = snaps_open(IMG_OPEN_RDONLY);
	struct img_snapshot_entry *list;
	int n;

	cr_assert_eq(img_snapshots_list(s, &list, &n), 0, "%s",
		     img_snapshots_errmsg(s));
	out[0] = '\0';
	for (int i = 0; i < n; i++) {
		size_t used = strlen(out);

		snprintf(out + used, len - used, "%s%s", i ? " " : "",
			 list[i].name);
		cr_assert_eq(list[i].virtual_size, DISK_SIZE);
		cr_assert_gt(list[i].created, 0);
	}
	free(list);
	img_snapshots_close(s);
}

static void expect_names(const char *want)
{
	char names[512];

	list_names(names, sizeof(names));
	cr_assert_str_eq(names, want);
}

static void snap_do(const char *action, const char *tag, unsigned flags)
{
	struct img_snapshots *s = snaps_open(IMG_OPEN_RDWR);
	int r;

	if (!strcmp(action, "create"))
		r = img_snapshots_create(s, tag);
	else if (!strcmp(action, "revert"))
		r = img_snapshots_revert(s, tag, flags);
	else
		r = img_snapshots_delete(s, tag);
	cr_assert_eq(r, 0, "%s %s: %s", action, tag, img_snapshots_errmsg(s));
	cr_assert_eq(img_snapshots_close(s), 0);
}

/* A snapshot read by itself (what imgtool serve FILE@TAG exports). */
static bool snapshot_reads(const char *tag, uint64_t off, int byte)
{
	struct img_snapshots *s = snaps_open(IMG_OPEN_RDONLY);
	struct img *img;
	bool same;

	cr_assert_eq(img_snapshots_open_image(s, tag, &img), 0, "%s",
		     img_snapshots_errmsg(s));
	cr_assert_eq(img_size(img), DISK_SIZE);
	same = image_reads(img, off, byte);
	img_close(img);
	img_snapshots_close(s);
	return same;
}

/* The whole round on one format. */
static void snapshot_round(const char *format, enum img_snapshot_kind want_kind)
{
	struct img_snapshots *s;
	char path[256];
	struct stat st;

	make_disk(format);
	s = snaps_open(IMG_OPEN_RDONLY);
	cr_assert_eq(img_snapshots_kind(s), want_kind);
	img_snapshots_close(s);
	expect_names("");

	write_pattern(0, 0xa1);
	snap_do("create", "s1", 0);
	expect_names("s1");
	cr_assert(disk_reads(0, 0xa1), "the disk reads the same after create");
	snprintf(path, sizeof(path), "%s.snapshots/s1.%s", disk, format);
	cr_assert_eq(stat(path, &st) == 0, want_kind == IMG_SNAPSHOT_LAYERS,
		     "the layer file exists for layers only");

	write_pattern(0, 0xb2);
	write_pattern(1u << 20, 0xb3);
	snap_do("create", "s2", 0);
	write_pattern(0, 0xc3);
	expect_names("s2 s1");
	cr_assert(snapshot_reads("s1", 0, 0xa1));
	cr_assert(snapshot_reads("s1", 1u << 20, 0));
	cr_assert(snapshot_reads("s2", 0, 0xb2));
	cr_assert(snapshot_reads("s2", 1u << 20, 0xb3));
	cr_assert(disk_reads(0, 0xc3));

	snap_do("revert", "s2", 0);
	cr_assert(disk_reads(0, 0xb2), "revert s2");
	cr_assert(disk_reads(1u << 20, 0xb3));
	expect_names("s2 s1");

	/* Reverting past a newer snapshot: layers need the flag. */
	s = snaps_open(IMG_OPEN_RDWR);
	if (want_kind == IMG_SNAPSHOT_LAYERS) {
		cr_assert_eq(img_snapshots_revert(s, "s1", 0), -ENOTEMPTY);
		cr_assert(strstr(img_snapshots_errmsg(s), "newer"), "%s",
			  img_snapshots_errmsg(s));
		cr_assert_eq(
			img_snapshots_revert(s, "s1",
					     IMG_SNAPSHOT_REVERT_DISCARD_NEWER),
			0, "%s", img_snapshots_errmsg(s));
	} else {
		cr_assert_eq(img_snapshots_revert(s, "s1", 0), 0, "%s",
			     img_snapshots_errmsg(s));
	}
	img_snapshots_close(s);
	cr_assert(disk_reads(0, 0xa1), "revert s1");
	cr_assert(disk_reads(1u << 20, 0));
	expect_names(want_kind == IMG_SNAPSHOT_LAYERS ? "s1" : "s2 s1");
	if (want_kind != IMG_SNAPSHOT_LAYERS)
		snap_do("delete", "s2", 0);

	/* Delete keeps what the disk reads. */
	write_pattern(2u << 20, 0xd4);
	snap_do("create", "s3", 0);
	write_pattern(3u << 20, 0xe5);
	snap_do("delete", "s1", 0);
	expect_names("s3");
	cr_assert(disk_reads(0, 0xa1));
	cr_assert(disk_reads(2u << 20, 0xd4));
	cr_assert(disk_reads(3u << 20, 0xe5));
	cr_assert(snapshot_reads("s3", 0, 0xa1));
	cr_assert(snapshot_reads("s3", 3u << 20, 0));
	snap_do("delete", "s3", 0);
	expect_names("");
	cr_assert(disk_reads(0, 0xa1));
	cr_assert(disk_reads(3u << 20, 0xe5));
	disk_checks_clean();
	if (want_kind == IMG_SNAPSHOT_LAYERS) {
		snprintf(path, sizeof(path), "%s.snapshots/s3.%s", disk,
			 format);
		cr_assert_neq(stat(path, &st), 0, "s3's layer is gone");
	}
}

TestSuite(snapshot, .init = setup, .fini = teardown);

Test(snapshot, round_on_vdi)
{
	snapshot_round("vdi", IMG_SNAPSHOT_LAYERS);
}

Test(snapshot, round_on_vhd)
{
	snapshot_round("vhd", IMG_SNAPSHOT_LAYERS);
}

Test(snapshot, round_on_vmdk)
{
	snapshot_round("vmdk", IMG_SNAPSHOT_LAYERS);
}

Test(snapshot, round_on_qcow2_uses_internal_snapshots)
{
	struct stat st;
	char path[256];

	snapshot_round("qcow2", IMG_SNAPSHOT_INTERNAL);
	snprintf(path, sizeof(path), "%s.snapshots", disk);
	cr_assert_neq(stat(path, &st), 0, "qcow2 keeps no snapshot folder");
}

/* Each error: its errno, one line naming the disk, nothing changed. */
static void error_cases(const char *format)
{
	struct img_snapshots *s, *other;
	char err[IMG_ERRMSG_MAX];
	struct img *img;
	struct img_open_options oo = { .flags = IMG_OPEN_RDWR };

	make_disk(format);
	write_pattern(0, 0x5a);
	snap_do("create", "keep", 0);

	s = snaps_open(IMG_OPEN_RDWR);
	cr_assert_eq(img_snapshots_revert(s, "nope", 0), -ENOENT);
	cr_assert(strstr(img_snapshots_errmsg(s), "no snapshot named 'nope'"),
		  "%s", img_snapshots_errmsg(s));
	cr_assert_eq(img_snapshots_delete(s, "nope"), -ENOENT);
	cr_assert_eq(img_snapshots_find(s, "nope"), -ENOENT);
	cr_assert_eq(img_snapshots_find(s, "keep"), 0);
	cr_assert_eq(img_snapshots_create(s, "keep"), -EEXIST);
	cr_assert(strstr(img_snapshots_errmsg(s), "already exists"), "%s",
		  img_snapshots_errmsg(s));
	cr_assert_eq(img_snapshots_create(s, "a/b"), -EINVAL);
	cr_assert_eq(img_snapshots_create(s, ""), -EINVAL);
	cr_assert(!strchr(img_snapshots_errmsg(s), '\n'));

	/* Another writer of the same disk's snapshots is refused. */
	cr_assert_eq(img_snapshots_open(&other, disk, NULL, IMG_OPEN_RDWR, err,
					sizeof(err)),
		     -EBUSY);
	img_snapshots_close(s);

	/* A read-only handle lists and reads but does not change. */
	s = snaps_open(IMG_OPEN_RDONLY);
	cr_assert_eq(img_snapshots_create(s, "new"), -EROFS);
	cr_assert_eq(img_snapshots_revert(s, "keep", 0), -EROFS);
	cr_assert_eq(img_snapshots_delete(s, "keep"), -EROFS);
	/* ... and keeps writers out while it is open. */
	cr_assert_eq(img_snapshots_open(&other, disk, NULL, IMG_OPEN_RDWR, err,
					sizeof(err)),
		     -EBUSY, "%s", err);
	img_snapshots_close(s);

	/* A disk open for writing (a running VM, a server) is in use. */
	cr_assert_eq(img_open(&img, disk, &oo, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(img_snapshots_open(&other, disk, NULL, IMG_OPEN_RDWR, err,
					sizeof(err)),
		     -EBUSY);
	cr_assert(strstr(err, "in use"), "%s", err);
	img_close(img);

	expect_names("keep");
	cr_assert(disk_reads(0, 0x5a));
}

Test(snapshot, errors_on_vdi)
{
	error_cases("vdi");
}

Test(snapshot, errors_on_vhd)
{
	error_cases("vhd");
}

Test(snapshot, errors_on_vmdk)
{
	error_cases("vmdk");
}

Test(snapshot, errors_on_qcow2)
{
	error_cases("qcow2");
}

Test(snapshot, raw_has_none)
{
	struct img_snapshots *s;
	struct img_snapshot_entry *list;
	int n;

	make_disk("raw");
	s = snaps_open(IMG_OPEN_RDWR);
	cr_assert_eq(img_snapshots_kind(s), IMG_SNAPSHOT_NONE);
	cr_assert_eq(img_snapshots_list(s, &list, &n), 0);
	cr_assert_eq(n, 0);
	free(list);
	cr_assert_eq(img_snapshots_create(s, "x"), -ENOTSUP);
	cr_assert(strstr(img_snapshots_errmsg(s), "convert it"), "%s",
		  img_snapshots_errmsg(s));
	img_snapshots_close(s);
}

Test(snapshot, tag_rules)
{
	cr_assert(img_snapshot_tag_valid("before-upgrade_2.0+x@y"));
	cr_assert(!img_snapshot_tag_valid(""));
	cr_assert(!img_snapshot_tag_valid(".hidden"));
	cr_assert(!img_snapshot_tag_valid("-x"));
	cr_assert(!img_snapshot_tag_valid("a b"));
	cr_assert(!img_snapshot_tag_valid("index"));
	cr_assert(!img_snapshot_tag_valid("pending"));
	cr_assert(!img_snapshot_tag_valid(
		"0123456789012345678901234567890123456789012345678901234567890123x"));
}

/* A create stopped after the layer got its name and before the disk was
 * replaced (what a crash leaves): readers refuse the disk, recovery
 * undoes the create, the disk reads as before. */
Test(snapshot, interrupted_create_is_refused_then_undone)
{
	struct img_snapshots *s;
	char path[256], err[IMG_ERRMSG_MAX];
	FILE *f;

	make_disk("vdi");
	write_pattern(0, 0x77);
	snap_do("create", "old", 0);
	snprintf(path, sizeof(path), "%s.snapshots/half.vdi", disk);
	cr_assert_eq(link(disk, path), 0);
	snprintf(path, sizeof(path), "%s.snapshots/pending", disk);
	f = fopen(path, "w");
	cr_assert_not_null(f);
	fprintf(f, "create half\n");
	fclose(f);

	cr_assert_eq(img_snapshots_open(&s, disk, NULL, IMG_OPEN_RDONLY, err,
					sizeof(err)),
		     -EUCLEAN);
	cr_assert(strstr(err, "interrupted"), "%s", err);
	cr_assert(!strchr(err, '\n'));
	cr_assert_eq(img_snapshots_recover(disk, NULL, err, sizeof(err)), 1,
		     "%s", err);
	cr_assert_eq(img_snapshots_recover(disk, NULL, err, sizeof(err)), 0);
	expect_names("old");
	snprintf(path, sizeof(path), "%s.snapshots/half.vdi", disk);
	cr_assert_neq(access(path, F_OK), 0);
	cr_assert(disk_reads(0, 0x77));
	disk_checks_clean();
}

/* A delete stopped after the data was copied into the child and before
 * the child left the layer: recovery finishes it. */
Test(snapshot, interrupted_delete_is_finished)
{
	char path[256], err[IMG_ERRMSG_MAX];
	FILE *f;

	make_disk("vmdk");
	write_pattern(0, 0x31);
	snap_do("create", "a", 0);
	write_pattern(1u << 20, 0x32);
	snap_do("create", "b", 0);
	write_pattern(2u << 20, 0x33);
	snprintf(path, sizeof(path), "%s.snapshots/pending", disk);
	f = fopen(path, "w");
	cr_assert_not_null(f);
	fprintf(f, "delete a\n");
	fclose(f);
	cr_assert_eq(img_snapshots_recover(disk, NULL, err, sizeof(err)), 1,
		     "%s", err);
	expect_names("b");
	cr_assert(disk_reads(0, 0x31));
	cr_assert(disk_reads(1u << 20, 0x32));
	cr_assert(disk_reads(2u << 20, 0x33));
	cr_assert(snapshot_reads("b", 0, 0x31));
}

/* ---- a failure at every directory change and host write ----------------*/

static long hook_calls, hook_fail_at;

static int fail_nth(enum img_io_op op, int fd, uint64_t off, uint64_t len,
		    void *opaque)
{
	(void)op, (void)fd, (void)off, (void)len, (void)opaque;
	return ++hook_calls == hook_fail_at ? -EIO : 0;
}

/* For every n, the nth host call of action fails: the action reports it
 * (or succeeds, when the failure is in its tidying-up), and the disk and
 * its list are then what they were before or after, never in between. */
static void fail_every_point(const char *format, const char *action)
{
	for (long n = 1;; n++) {
		struct img_snapshots *s;
		char names[512], err[IMG_ERRMSG_MAX];
		int r;

		teardown();
		setup();
		make_disk(format);
		write_pattern(0, 0x41);
		snap_do("create", "a", 0);
		write_pattern(0, 0x42);
		hook_calls = 0;
		hook_fail_at = n;
		img_set_io_hook(fail_nth, NULL);
		r = img_snapshots_open(&s, disk, NULL, IMG_OPEN_RDWR, err,
				       sizeof(err));
		if (r == 0) {
			r = !strcmp(action, "create")
				    ? img_snapshots_create(s, "b")
			    : !strcmp(action, "revert")
				    ? img_snapshots_revert(s, "a", 0)
				    : img_snapshots_delete(s, "a");
			if (r < 0)
				cr_assert(
					!strchr(img_snapshots_errmsg(s), '\n'));
			img_snapshots_close(s);
		}
		img_set_io_hook(NULL, NULL);
		/* the next writer finishes what a failure left */
		cr_assert_geq(img_snapshots_recover(disk, NULL, err,
						    sizeof(err)),
			      0, "point %ld: %s", n, err);
		list_names(names, sizeof(names));
		if (!strcmp(action, "create")) {
			cr_assert(!strcmp(names, "a") || !strcmp(names, "b a"),
				  "point %ld: %s", n, names);
			cr_assert(disk_reads(0, 0x42), "point %ld", n);
		} else if (!strcmp(action, "revert")) {
			cr_assert_str_eq(names, "a", "point %ld", n);
			cr_assert(disk_reads(0, 0x42) || disk_reads(0, 0x41),
				  "point %ld", n);
		} else {
			cr_assert(!strcmp(names, "a") || !strcmp(names, ""),
				  "point %ld: %s", n, names);
			cr_assert(disk_reads(0, 0x42), "point %ld", n);
		}
		if (hook_calls < n)
			break; /* every point has failed once */
	}
	/* the operation went through the hook: directory changes, writes */
	cr_assert_gt(hook_calls, 5, "%s on %s: %ld host calls", action, format,
		     hook_calls);
	cr_log_info("%s on %s: a failure at each of %ld points", action, format,
		    hook_calls);
}

Test(snapshot, failures_at_every_point_vdi_create, .timeout = 120)
{
	fail_every_point("vdi", "create");
}

Test(snapshot, failures_at_every_point_vmdk_delete, .timeout = 120)
{
	fail_every_point("vmdk", "delete");
}

Test(snapshot, failures_at_every_point_vhd_revert, .timeout = 120)
{
	fail_every_point("vhd", "revert");
}

Test(snapshot, failures_at_every_point_qcow2_delete, .timeout = 120)
{
	fail_every_point("qcow2", "delete");
}
