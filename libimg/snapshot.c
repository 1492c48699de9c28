/* SPDX-License-Identifier: MIT */
/*
 * Snapshots of a disk, whatever keeps them (img_snapshots_* in img.h).
 *
 * A format with internal snapshots (qcow2) keeps them inside the file and
 * its driver does the work.  Every other format that can layer over a
 * parent uses the snapshot folder DISK.snapshots/:
 *
 *   - snapshot TAG is the read-only layer DISK.snapshots/TAG.EXT, part of
 *     DISK's backing chain; DISK's path never changes;
 *   - create turns DISK's current contents into that layer (a hard link,
 *     so no data moves) and replaces DISK by a fresh child of it; revert
 *     replaces DISK by a fresh child of an older layer; delete pulls a
 *     layer's data into its child, takes it out of the chain and removes
 *     its files;
 *   - DISK.snapshots/index keeps the creation dates (name TAB seconds);
 *   - DISK.snapshots/pending names the operation under way ("delete TAG")
 *     from before its first change until after its last, so that the
 *     next writer finishes or undoes an interrupted one (recovery below)
 *     and readers refuse a disk in between.
 *
 * Crash safety: DISK is only ever replaced by rename() of a complete new
 * image; a layer's data is copied into its child before the child stops
 * referring to it; a layer's files are removed last.  Every directory
 * change (link, rename, unlink, mkdir) goes through the I/O hook first, so
 * the crash tests can stop the process between any two of them.
 *
 * Processes exclude each other with flock() on the folder: shared by
 * readers (listing, serving a snapshot), exclusive by writers.
 *
 * Here: the handle and the API over both kinds.  snapshot_folder.c keeps
 * the folder's files and reads the chain; snapshot_layers.c does the
 * layer operations and the recovery.
 */
#include "snapshot_folder.h"

#include "backend.h"

#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

bool img_snapshot_tag_valid(const char *tag)
{
	size_t len = tag ? strlen(tag) : 0;

	if (len == 0 || len > IMG_SNAPSHOT_TAG_MAX || tag[0] == '.' ||
	    tag[0] == '-')
		return false;
	for (const char *p = tag; *p; p++)
		if (!isalnum((unsigned char)*p) && !strchr("._-+@", *p))
			return false;
	return strcmp(tag, "index") != 0 && strcmp(tag, "pending") != 0;
}

static int check_tag(struct img_snapshots *s, const char *tag)
{
	if (!img_snapshot_tag_valid(tag))
		return snap_fail(
			s, -EINVAL,
			"invalid snapshot name '%s' (letters, digits, . _ - + @; at most %d)",
			tag ? tag : "", IMG_SNAPSHOT_TAG_MAX);
	return 0;
}

/* ---- the handle ---------------------------------------------------------*/

static int kind_of(const char *format)
{
	const struct img_driver *drv = img_driver_find(format);

	if (drv && drv->snapshot_create)
		return IMG_SNAPSHOT_INTERNAL;
	if (img_format_caps(format) & IMG_FORMAT_BACKING)
		return IMG_SNAPSHOT_LAYERS;
	return IMG_SNAPSHOT_NONE;
}

/* The disk's path with its directory made absolute (the process may
 * change directory while the handle lives: imgtool serve --daemon). */
static char *absolute_disk_path(const char *path)
{
	char *copy = strdup(path), real[PATH_MAX], *out = NULL;

	if (copy && realpath(dirname(copy), real) &&
	    asprintf(&out, "%s/%s", strcmp(real, "/") ? real : "",
		     snap_base_name(path)) < 0)
		out = NULL;
	free(copy);
	return out;
}

static int folder_lock(struct img_snapshots *s, bool writer)
{
	struct stat st;

	if (writer && lstat(s->dir, &st) < 0) {
		if (HOOKED(mkdir(s->dir, 0755)) < 0 && errno != EEXIST)
			return snap_fail(s, -errno, "%s: %s", s->dir,
					 strerror(errno));
		s->made_dir = true;
	}
	s->dir_fd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s->dir_fd < 0) {
		if (errno == ENOENT && !writer)
			return 0;
		return snap_fail(s, -errno, "%s: %s", s->dir,
				 errno == ENOTDIR ? "not a directory"
						  : strerror(errno));
	}
	if (s->flags & IMG_OPEN_NO_LOCK)
		return 0;
	if (flock(s->dir_fd, (writer ? LOCK_EX : LOCK_SH) | LOCK_NB) < 0) {
		if (errno == EWOULDBLOCK)
			return snap_fail(
				s, -EBUSY,
				"%s: its snapshots are being %s by another process",
				s->path, writer ? "used" : "changed");
		return snap_fail(s, -errno, "%s: cannot lock: %s", s->dir,
				 strerror(errno));
	}
	return 0;
}

static void handle_free(struct img_snapshots *s)
{
	if (s->img)
		img_close(s->img);
	snap_layers_free(s);
	if (s->dir_fd >= 0)
		close(s->dir_fd);
	/* A folder this handle made and left empty goes again. */
	if (s->made_dir)
		rmdir(s->dir);
	free(s->entries);
	free(s->dir);
	free(s->path);
	free(s);
}

static int open_layers(struct img_snapshots *s, char *errbuf, size_t errlen)
{
	bool writer = s->flags & IMG_OPEN_RDWR;
	const char *dot, *base = snap_base_name(s->path);
	char tag[IMG_SNAPSHOT_TAG_MAX + 16];
	int op, r;

	dot = strrchr(base, '.');
	snprintf(s->ext, sizeof(s->ext), "%s",
		 dot && dot != base && strlen(dot + 1) < sizeof(s->ext)
			 ? dot + 1
			 : s->format);
	r = folder_lock(s, writer);
	if (r < 0)
		return img_error_buf(errbuf, errlen, r, "%s", s->errmsg);
	if (s->dir_fd < 0)
		return 0;
	snap_index_load(s);
	op = snap_pending_read(s->dir, tag, sizeof(tag));
	if (op == -ENOENT)
		return 0;
	if (!writer)
		return img_error_buf(
			errbuf, errlen, -EUCLEAN,
			"%s: a snapshot %s of '%s' was interrupted; a writer (imgtool snapshot, imgtool check -r) finishes it",
			s->path, op >= 0 ? snap_pending_ops[op] : "change",
			tag);
	r = snap_recover(s, op, tag);
	if (r < 0)
		return img_error_buf(
			errbuf, errlen, r,
			"%s: cannot finish an interrupted snapshot %s: %s",
			s->path, op >= 0 ? snap_pending_ops[op] : "change",
			s->errmsg);
	return 0;
}

int img_snapshots_open(struct img_snapshots **out, const char *path,
		       const char *format, unsigned flags, char *errbuf,
		       size_t errlen)
{
	struct img_snapshots *s;
	struct img_open_options oo = { .format = format,
				       .flags = (flags & (IMG_OPEN_RDWR |
							  IMG_OPEN_NO_LOCK)) |
						IMG_OPEN_NO_BACKING };
	char probed[16];
	struct img *probe;
	int r;

	*out = NULL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return img_error_buf(errbuf, errlen, -ENOMEM, "out of memory");
	s->dir_fd = -1;
	s->flags = flags;
	if (!img_name_is_local(path)) {
		/* The storage keeps its own snapshots (RBD): none here. */
		s->path = strdup(path);
		if (!s->path) {
			free(s);
			return img_error_buf(errbuf, errlen, -ENOMEM,
					     "out of memory");
		}
		*out = s;
		return 0;
	}
	s->path = absolute_disk_path(path);
	if (!s->path || asprintf(&s->dir, "%s.snapshots", s->path) < 0) {
		r = img_error_buf(errbuf, errlen, errno ? -errno : -ENOMEM,
				  "%s: %s", path, strerror(errno));
		goto fail;
	}
	if (!format) {
		r = img_probe(s->path, probed, sizeof(probed), errbuf, errlen);
		if (r < 0)
			goto fail;
		format = probed;
	}
	if (!img_format_canonical(format)) {
		r = img_error_buf(errbuf, errlen, -EINVAL,
				  "%s: unknown format '%s'", path, format);
		goto fail;
	}
	snprintf(s->format, sizeof(s->format), "%s",
		 img_format_canonical(format));
	s->kind = kind_of(s->format);
	oo.format = s->format;
	if (s->kind == IMG_SNAPSHOT_LAYERS) {
		r = open_layers(s, errbuf, errlen);
		if (r < 0)
			goto fail;
	}
	/* The disk itself: a writer must be alone with it (a running VM or
	 * a server holds its lock). */
	if (s->kind == IMG_SNAPSHOT_INTERNAL) {
		oo.flags &= ~IMG_OPEN_NO_BACKING;
		r = img_open(&s->img, s->path, &oo, errbuf, errlen);
		if (r < 0)
			goto fail;
	} else {
		r = img_open(&probe, s->path, &oo, errbuf, errlen);
		if (r < 0)
			goto fail;
		img_close(probe);
	}
	*out = s;
	return 0;
fail:
	handle_free(s);
	return r;
}

int img_snapshots_close(struct img_snapshots *s)
{
	int r = 0;

	if (!s)
		return 0;
	if (s->img) {
		r = img_close(s->img);
		s->img = NULL;
	}
	/* Keep a folder that now holds something. */
	if (s->made_dir && s->dir_fd >= 0) {
		DIR *d = opendir(s->dir);
		struct dirent *e;

		while (d && (e = readdir(d)))
			if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
				s->made_dir = false;
		if (d)
			closedir(d);
	}
	handle_free(s);
	return r;
}

enum img_snapshot_kind img_snapshots_kind(const struct img_snapshots *s)
{
	return s->kind;
}

const char *img_snapshots_errmsg(const struct img_snapshots *s)
{
	return s->errmsg;
}

static int need_kind(struct img_snapshots *s, const char *what)
{
	if (s->kind == IMG_SNAPSHOT_NONE && !s->dir)
		return snap_fail(
			s, -ENOTSUP,
			"%s: the storage keeps its own snapshots: %s them with its tools",
			s->path, what);
	if (s->kind == IMG_SNAPSHOT_NONE)
		return snap_fail(
			s, -ENOTSUP,
			"%s: %s images have no snapshots or differencing layers; convert it to vdi, vhd, vhdx, vmdk or qcow2 first",
			s->path, s->format);
	return 0;
}

static int need_writer(struct img_snapshots *s)
{
	if (!(s->flags & IMG_OPEN_RDWR))
		return snap_fail(s, -EROFS,
				 "%s: snapshots opened read-only cannot change",
				 s->path);
	return 0;
}

static int internal_result(struct img_snapshots *s, int r)
{
	if (r < 0)
		snap_fail(s, r, "%s", img_errmsg(s->img));
	return r;
}

/* An internal snapshot by name (or by id when no name matches). */
static int internal_find(struct img_snapshots *s, const char *tag)
{
	struct img_snapshot *list;
	int count, r, found = -ENOENT;

	r = img_snapshot_list(s->img, &list, &count);
	if (r < 0)
		return internal_result(s, r);
	for (int i = 0; i < count; i++)
		if (!strcmp(list[i].name, tag) ||
		    (found < 0 && !strcmp(list[i].id, tag)))
			found = 0;
	free(list);
	if (found < 0)
		snap_fail(s, -ENOENT, "%s: no snapshot named '%s'", s->path,
			  tag);
	return found;
}

int img_snapshots_list(struct img_snapshots *s,
		       struct img_snapshot_entry **list, int *count)
{
	struct img_snapshot_entry *out;
	size_t strings = 0;
	char *text;
	int r, n = 0;

	*list = NULL;
	*count = 0;
	if (s->kind == IMG_SNAPSHOT_NONE)
		return 0;
	if (s->kind == IMG_SNAPSHOT_INTERNAL) {
		struct img_snapshot *in;
		int nin;

		r = img_snapshot_list(s->img, &in, &nin);
		if (r < 0)
			return internal_result(s, r);
		out = calloc(nin ? nin : 1, sizeof(*out));
		if (!out) {
			free(in);
			return snap_fail(s, -ENOMEM, "out of memory");
		}
		for (int i = nin - 1; i >= 0; i--) {
			struct img_snapshot_entry *e = &out[n++];

			snprintf(e->name, sizeof(e->name), "%s", in[i].name);
			snprintf(e->id, sizeof(e->id), "%s", in[i].id);
			e->created = (int64_t)in[i].date_sec;
			e->virtual_size = in[i].disk_size;
		}
		free(in);
		*list = out;
		*count = n;
		return 0;
	}
	if (s->dir_fd < 0)
		return 0;
	r = snap_layers_load(s, 0);
	if (r < 0)
		return r;
	/* the entries, then their paths, in one block */
	for (int i = 1; i < s->nlayers; i++)
		if (s->layers[i].name[0])
			strings += strlen(s->layers[i].path) + 1;
	out = calloc(1, s->nlayers * sizeof(*out) + strings);
	if (!out)
		return snap_fail(s, -ENOMEM, "out of memory");
	text = (char *)(out + s->nlayers);
	for (int i = 1; i < s->nlayers; i++) {
		const struct snapshot_layer *l = &s->layers[i];
		struct snapshot_index_entry *ie;
		struct img_snapshot_entry *e;
		struct stat st;

		if (!l->name[0])
			continue;
		e = &out[n++];
		snprintf(e->name, sizeof(e->name), "%s", l->name);
		ie = snap_index_find(s, l->name);
		e->created = ie			       ? ie->created
			     : stat(l->path, &st) == 0 ? (int64_t)st.st_mtime
						       : 0;
		e->virtual_size = l->virtual_size;
		e->disk_usage = l->actual_size;
		e->path = strcpy(text, l->path);
		text += strlen(l->path) + 1;
	}
	*list = out;
	*count = n;
	return 0;
}

int img_snapshots_find(struct img_snapshots *s, const char *tag)
{
	int r = check_tag(s, tag);

	if (r < 0 && s->kind != IMG_SNAPSHOT_INTERNAL)
		return r;
	if (s->kind == IMG_SNAPSHOT_NONE ||
	    (s->kind == IMG_SNAPSHOT_LAYERS && s->dir_fd < 0))
		return snap_fail(s, -ENOENT, "%s: no snapshot named '%s'",
				 s->path, tag);
	if (s->kind == IMG_SNAPSHOT_INTERNAL)
		return internal_find(s, tag);
	r = snap_layers_load(s, 0);
	if (r < 0)
		return r;
	if (snap_layer_find(s, tag) < 0)
		return snap_fail(s, -ENOENT, "%s: no snapshot named '%s'",
				 s->path, tag);
	return 0;
}

int img_snapshots_create(struct img_snapshots *s, const char *tag)
{
	int r = need_kind(s, "create");

	if (r == 0)
		r = need_writer(s);
	if (r == 0)
		r = check_tag(s, tag);
	if (r < 0)
		return r;
	if (s->kind == IMG_SNAPSHOT_INTERNAL) {
		if (internal_find(s, tag) == 0)
			return snap_fail(s, -EEXIST,
					 "%s: snapshot '%s' already exists",
					 s->path, tag);
		return internal_result(s, img_snapshot_create(s->img, tag));
	}
	return snap_layers_create(s, tag);
}

int img_snapshots_revert(struct img_snapshots *s, const char *tag,
			 unsigned flags)
{
	int r = need_kind(s, "revert");

	if (r == 0)
		r = need_writer(s);
	if (r == 0)
		r = img_snapshots_find(s, tag);
	if (r < 0)
		return r;
	if (s->kind == IMG_SNAPSHOT_INTERNAL)
		return internal_result(s, img_snapshot_apply(s->img, tag));
	return snap_layers_revert(s, tag, flags);
}

int img_snapshots_delete(struct img_snapshots *s, const char *tag)
{
	int r = need_kind(s, "delete");

	if (r == 0)
		r = need_writer(s);
	if (r == 0)
		r = img_snapshots_find(s, tag);
	if (r < 0)
		return r;
	if (s->kind == IMG_SNAPSHOT_INTERNAL)
		return internal_result(s, img_snapshot_delete(s->img, tag));
	return snap_layers_delete(s, tag);
}

int img_snapshots_open_image(struct img_snapshots *s, const char *tag,
			     struct img **out)
{
	struct img_open_options oo = { .format = s->format,
				       .flags = IMG_OPEN_RDONLY };
	char errbuf[IMG_ERRMSG_MAX];
	int idx, r;

	*out = NULL;
	r = img_snapshots_find(s, tag);
	if (r < 0)
		return r;
	if (s->kind == IMG_SNAPSHOT_INTERNAL) {
		r = img_open(out, s->path, &oo, errbuf, sizeof(errbuf));
		if (r < 0)
			return snap_fail(s, r, "%s", errbuf);
		r = img_snapshot_load(*out, tag);
		if (r < 0) {
			snap_fail(s, r, "%s", img_errmsg(*out));
			img_close(*out);
			*out = NULL;
		}
		return r;
	}
	idx = snap_layer_find(s, tag);
	oo.format = s->layers[idx].format;
	r = img_open(out, s->layers[idx].path, &oo, errbuf, sizeof(errbuf));
	if (r < 0)
		return snap_fail(s, r, "%s", errbuf);
	return 0;
}

int img_snapshots_recover(const char *path, const char *format, char *errbuf,
			  size_t errlen)
{
	char *dir = NULL, tag[IMG_SNAPSHOT_TAG_MAX + 16];
	struct img_snapshots *s;
	int op, r;

	if (!img_name_is_local(path))
		return 0;
	if (asprintf(&dir, "%s.snapshots", path) < 0)
		return img_error_buf(errbuf, errlen, -ENOMEM, "out of memory");
	op = snap_pending_read(dir, tag, sizeof(tag));
	free(dir);
	if (op == -ENOENT)
		return 0;
	r = img_snapshots_open(&s, path, format, IMG_OPEN_RDWR, errbuf, errlen);
	if (r < 0)
		return r;
	img_snapshots_close(s);
	return 1;
}

int img_snapshots_remove_all(const char *path, char *errbuf, size_t errlen)
{
	char *dir = NULL, *file = NULL;
	struct dirent *de;
	int r = 0;
	DIR *d;

	if (!img_name_is_local(path))
		return 0;
	if (asprintf(&dir, "%s.snapshots", path) < 0)
		return img_error_buf(errbuf, errlen, -ENOMEM, "out of memory");
	d = opendir(dir);
	if (!d) {
		if (errno != ENOENT)
			r = img_error_buf(errbuf, errlen, -errno, "%s: %s", dir,
					  strerror(errno));
		free(dir);
		return r;
	}
	/* flat: the layers, the index, the pending marker */
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (asprintf(&file, "%s/%s", dir, de->d_name) < 0) {
			r = img_error_buf(errbuf, errlen, -ENOMEM,
					  "out of memory");
			break;
		}
		if (unlink(file) && errno != ENOENT && !r)
			r = img_error_buf(errbuf, errlen, -errno, "%s: %s",
					  file, strerror(errno));
		free(file);
	}
	closedir(d);
	if (!r && rmdir(dir))
		r = img_error_buf(errbuf, errlen, -errno, "%s: %s", dir,
				  strerror(errno));
	free(dir);
	return r;
}
