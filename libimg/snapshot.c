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
 */
#include "internal.h"

#include "backend.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SNAPSHOT_MAX_LAYERS 64

struct snapshot_layer {
	char *path;
	char format[16];
	char *backing_recorded; /* the parent reference as stored */
	uint64_t virtual_size;
	uint64_t actual_size;
	int nfiles; /* further files of the layer (VMDK extents) */
	char **files;
	char name[IMG_SNAPSHOT_TAG_MAX + 1]; /* "" unless in the folder */
};

struct snapshot_index_entry {
	char name[IMG_SNAPSHOT_TAG_MAX + 1];
	int64_t created;
};

struct img_snapshots {
	char *path; /* the disk, its directory made absolute */
	char format[16];
	unsigned flags;
	enum img_snapshot_kind kind;
	struct img *img; /* internal snapshots: the disk itself */
	char *dir;	 /* DISK.snapshots */
	int dir_fd;	 /* the folder, flock()ed; -1 when there is none */
	bool made_dir;
	char ext[16];
	int nentries;
	struct snapshot_index_entry *entries;
	int nlayers; /* [0] is the disk itself */
	struct snapshot_layer *layers;
	char errmsg[IMG_ERRMSG_MAX];
};

static const char *const pending_ops[] = { "create", "revert", "delete" };
enum pending_op { PENDING_CREATE, PENDING_REVERT, PENDING_DELETE };

static int snap_fail(struct img_snapshots *s, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int snap_fail(struct img_snapshots *s, int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(s->errmsg, sizeof(s->errmsg), fmt, ap);
	va_end(ap);
	return err;
}

/* Every change to a directory passes the I/O hook (crash tests). */
static int dir_change_hook(void)
{
	return img_file_run_io_hook(IMG_IO_DIRECTORY, -1, 0, 0);
}

#define HOOKED(call)                                           \
	({                                                     \
		int hook_r_ = dir_change_hook();               \
		hook_r_ < 0 ? (errno = -hook_r_, -1) : (call); \
	})

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

static bool same_file(const char *a, const char *b)
{
	struct stat sa, sb;

	return stat(a, &sa) == 0 && stat(b, &sb) == 0 &&
	       sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

static bool same_dir(const char *a, const char *b)
{
	char *ca = strdup(a), *cb = strdup(b);
	char ra[PATH_MAX], rb[PATH_MAX];
	bool same = ca && cb && realpath(dirname(ca), ra) &&
		    realpath(dirname(cb), rb) && strcmp(ra, rb) == 0;

	free(ca);
	free(cb);
	return same;
}

static const char *base_name(const char *path)
{
	const char *slash = strrchr(path, '/');

	return slash ? slash + 1 : path;
}

static void sync_dir(int fd)
{
	if (fd >= 0 && dir_change_hook() == 0)
		fsync(fd);
}

/* ---- the index and the pending operation --------------------------------*/

static void index_load(struct img_snapshots *s)
{
	char *path = NULL, line[256];
	FILE *f;

	s->nentries = 0;
	if (asprintf(&path, "%s/index", s->dir) < 0)
		return;
	f = fopen(path, "r");
	free(path);
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		struct snapshot_index_entry *e;
		char *tab = strchr(line, '\t');

		if (!tab)
			continue;
		*tab = '\0';
		if (!img_snapshot_tag_valid(line))
			continue;
		e = realloc(s->entries, (s->nentries + 1) * sizeof(*e));
		if (!e)
			break;
		s->entries = e;
		e = &s->entries[s->nentries++];
		memcpy(e->name, line, strlen(line) + 1);
		e->created = strtoll(tab + 1, NULL, 10);
	}
	fclose(f);
}

/* Write text to DIR/name through a temporary file and rename(). */
static int write_file_atomic(struct img_snapshots *s, const char *name,
			     const char *text)
{
	char *path = NULL, *tmp = NULL;
	size_t len = strlen(text);
	int fd = -1, r = -ENOMEM;

	if (asprintf(&path, "%s/%s", s->dir, name) < 0 ||
	    asprintf(&tmp, "%s/%s.tmp", s->dir, name) < 0)
		goto out;
	fd = HOOKED(open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
	if (fd < 0) {
		r = -errno;
		goto out;
	}
	r = img_file_run_io_hook(IMG_IO_WRITE, fd, 0, len);
	if (r == 0 && write(fd, text, len) != (ssize_t)len)
		r = errno ? -errno : -ENOSPC;
	if (r == 0)
		r = img_file_run_io_hook(IMG_IO_SYNC, fd, 0, 0);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r == 0 && HOOKED(rename(tmp, path)) < 0)
		r = -errno;
	if (r < 0)
		unlink(tmp);
	else
		sync_dir(s->dir_fd);
out:
	if (r < 0)
		snap_fail(s, r, "%s/%s: cannot write: %s", s->dir, name,
			  strerror(-r));
	free(path);
	free(tmp);
	return r;
}

static int index_save(struct img_snapshots *s)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	int r;

	if (!f)
		return snap_fail(s, -ENOMEM, "out of memory");
	fprintf(f, "# snapshots of this folder's image: name, created "
		   "(Unix time)\n");
	for (int i = 0; i < s->nentries; i++)
		fprintf(f, "%s\t%" PRId64 "\n", s->entries[i].name,
			s->entries[i].created);
	if (fclose(f) != 0) {
		free(text);
		return snap_fail(s, -ENOMEM, "out of memory");
	}
	r = write_file_atomic(s, "index", text);
	free(text);
	return r;
}

static struct snapshot_index_entry *index_find(struct img_snapshots *s,
					       const char *name)
{
	for (int i = 0; i < s->nentries; i++)
		if (strcmp(s->entries[i].name, name) == 0)
			return &s->entries[i];
	return NULL;
}

static void index_remove(struct img_snapshots *s, const char *name)
{
	struct snapshot_index_entry *e = index_find(s, name);

	if (!e)
		return;
	memmove(e, e + 1,
		(size_t)(&s->entries[s->nentries] - (e + 1)) * sizeof(*e));
	s->nentries--;
}

static int index_add(struct img_snapshots *s, const char *name)
{
	struct snapshot_index_entry *e;

	index_remove(s, name);
	e = realloc(s->entries, (s->nentries + 1) * sizeof(*e));
	if (!e)
		return snap_fail(s, -ENOMEM, "out of memory");
	s->entries = e;
	e = &s->entries[s->nentries++];
	snprintf(e->name, sizeof(e->name), "%s", name);
	e->created = (int64_t)time(NULL);
	return 0;
}

static int pending_begin(struct img_snapshots *s, enum pending_op op,
			 const char *tag)
{
	char text[IMG_SNAPSHOT_TAG_MAX + 16];

	snprintf(text, sizeof(text), "%s %s\n", pending_ops[op], tag);
	return write_file_atomic(s, "pending", text);
}

static void pending_end(struct img_snapshots *s)
{
	char *path = NULL;

	if (asprintf(&path, "%s/pending", s->dir) < 0)
		return;
	if (HOOKED(unlink(path)) == 0)
		sync_dir(s->dir_fd);
	free(path);
}

/* The operation under way, or -ENOENT; tag gets its name. */
static int pending_read(const char *dir, char *tag, size_t taglen)
{
	char *path = NULL, line[256], *space;
	int op = -ENOENT;
	FILE *f;

	if (asprintf(&path, "%s/pending", dir) < 0)
		return -ENOMEM;
	f = fopen(path, "r");
	free(path);
	if (!f)
		return -ENOENT;
	if (fgets(line, sizeof(line), f) && (space = strchr(line, ' '))) {
		*space = '\0';
		space[strcspn(space + 1, "\n") + 1] = '\0';
		for (int i = 0; i < 3; i++)
			if (strcmp(line, pending_ops[i]) == 0)
				op = i;
		snprintf(tag, taglen, "%s", space + 1);
	} else {
		/* torn before its rename: nothing had started */
		op = -EINVAL;
	}
	fclose(f);
	return op;
}

/* ---- the chain ----------------------------------------------------------*/

static void layers_free(struct img_snapshots *s)
{
	for (int i = 0; s->layers && i < s->nlayers; i++) {
		struct snapshot_layer *l = &s->layers[i];

		for (int j = 0; j < l->nfiles; j++)
			free(l->files[j]);
		free(l->files);
		free(l->path);
		free(l->backing_recorded);
	}
	free(s->layers);
	s->layers = NULL;
	s->nlayers = 0;
}

/* Is path a file directly inside the folder (not a link to an original
 * backing file)?  Then name gets its snapshot name. */
static bool layer_name_in_dir(struct img_snapshots *s, const char *path,
			      char *name)
{
	char dir_real[PATH_MAX], snap_real[PATH_MAX];
	char *copy = strdup(path), *dot;
	bool inside = false;
	struct stat st;

	name[0] = '\0';
	if (!copy)
		return false;
	if (lstat(path, &st) == 0 && !S_ISLNK(st.st_mode) &&
	    realpath(dirname(copy), dir_real) && realpath(s->dir, snap_real) &&
	    strcmp(dir_real, snap_real) == 0)
		inside = true;
	free(copy);
	if (!inside)
		return false;
	snprintf(name, IMG_SNAPSHOT_TAG_MAX + 1, "%s", base_name(path));
	dot = strrchr(name, '.');
	if (dot && dot != name)
		*dot = '\0';
	return img_snapshot_tag_valid(name);
}

/* Learn the chain of the disk: paths, formats, references, files. */
static int layers_load(struct img_snapshots *s, unsigned extra_flags)
{
	struct img_open_options oo = { .format = s->format,
				       .flags = IMG_OPEN_RDONLY | extra_flags };
	struct img_info *info = NULL;
	struct img *img = NULL;
	char errbuf[IMG_ERRMSG_MAX];
	int r;

	layers_free(s);
	s->layers = calloc(SNAPSHOT_MAX_LAYERS, sizeof(*s->layers));
	if (!s->layers)
		return snap_fail(s, -ENOMEM, "out of memory");
	r = img_open(&img, s->path, &oo, errbuf, sizeof(errbuf));
	if (r < 0)
		return snap_fail(s, r, "%s", errbuf);
	for (struct img *l = img; l && s->nlayers < SNAPSHOT_MAX_LAYERS;
	     l = img_backing(l)) {
		struct snapshot_layer *layer = &s->layers[s->nlayers++];

		img_info_free(info);
		info = NULL;
		r = img_get_info(l, &info);
		if (r < 0) {
			snap_fail(s, r, "%s", img_errmsg(l));
			goto out;
		}
		layer->path = strdup(img_filename(l));
		layer->backing_recorded = strdup(info->backing_filename);
		layer->files = calloc(info->nfiles + 1, sizeof(char *));
		if (!layer->path || !layer->backing_recorded || !layer->files) {
			r = snap_fail(s, -ENOMEM, "out of memory");
			goto out;
		}
		snprintf(layer->format, sizeof(layer->format), "%s",
			 img_format(l));
		layer->virtual_size = img_size(l);
		layer->actual_size = info->actual_size;
		for (int i = 0; i < info->nfiles; i++) {
			if (same_file(info->files[i], layer->path))
				continue;
			layer->files[layer->nfiles] = strdup(info->files[i]);
			if (!layer->files[layer->nfiles++]) {
				r = snap_fail(s, -ENOMEM, "out of memory");
				goto out;
			}
		}
		if (l != img)
			layer_name_in_dir(s, layer->path, layer->name);
	}
	r = 0;
out:
	img_close(img);
	img_info_free(info);
	return r;
}

static int layer_find(struct img_snapshots *s, const char *tag)
{
	for (int i = 1; i < s->nlayers; i++)
		if (strcmp(s->layers[i].name, tag) == 0)
			return i;
	return -1;
}

static char *layer_path_for(struct img_snapshots *s, const char *tag)
{
	char *out = NULL;

	if (asprintf(&out, "%s/%s.%s", s->dir, tag, s->ext) < 0)
		return NULL;
	return out;
}

/* Record parent again in child (its identity after parent changed, or a
 * new reference text; NULL: img_parent_reference()). */
static int refresh_child(struct img_snapshots *s, const char *child_path,
			 const char *child_format, const char *parent_path,
			 const char *parent_format, const char *given_ref)
{
	return img_record_parent(child_path, child_format, parent_path,
				 parent_format, given_ref, s->errmsg,
				 sizeof(s->errmsg));
}

/* Replace the disk by a fresh child of parent: created at a temporary
 * name next to it, then renamed over it. */
static int replace_disk(struct img_snapshots *s,
			const struct snapshot_layer *parent)
{
	struct img_create_options co = {
		.format = s->layers[0].format,
		.size = s->layers[0].virtual_size,
		.backing_format = parent->format,
	};
	char errbuf[IMG_ERRMSG_MAX] = "";
	char *ref = img_parent_reference(s->path, parent->path);
	char *tmp = NULL;
	int r = -ENOMEM;

	if (!ref || asprintf(&tmp, "%s.snapshot-tmp", s->path) < 0) {
		snap_fail(s, -ENOMEM, "%s: cannot name %s: %s", s->path,
			  parent->path, strerror(errno));
		goto out;
	}
	co.backing_file = ref;
	r = dir_change_hook();
	if (r == 0)
		r = img_create(tmp, &co, errbuf, sizeof(errbuf));
	if (r < 0) {
		snap_fail(s, r, "%s", errbuf[0] ? errbuf : strerror(-r));
		unlink(tmp);
		goto out;
	}
	if (HOOKED(rename(tmp, s->path)) < 0) {
		r = -errno;
		snap_fail(s, r, "%s: %s", s->path, strerror(errno));
		unlink(tmp);
		goto out;
	}
	sync_dir(-1);
out:
	free(ref);
	free(tmp);
	return r;
}

/* Remove every file of a layer (descriptor and extents). */
static void layer_remove_files(const struct snapshot_layer *l)
{
	for (int i = 0; i < l->nfiles; i++)
		HOOKED(unlink(l->files[i]));
	HOOKED(unlink(l->path));
}

/* ---- create -------------------------------------------------------------*/

static char *extent_target(struct img_snapshots *s, const char *f)
{
	char *out = NULL;

	if (asprintf(&out, "%s/%s", s->dir, base_name(f)) < 0)
		return NULL;
	return out;
}

static void unlink_extent_targets(struct img_snapshots *s,
				  const struct snapshot_layer *top, int n)
{
	for (int i = 0; i < n; i++) {
		char *target = extent_target(s, top->files[i]);

		if (target && same_file(target, top->files[i]))
			HOOKED(unlink(target));
		free(target);
	}
}

/* Second names in the folder for the disk's extents (they are named
 * relative to the descriptor, so they move along only from its
 * directory). */
static int link_extents(struct img_snapshots *s,
			const struct snapshot_layer *top)
{
	for (int i = 0; i < top->nfiles; i++) {
		char *target = extent_target(s, top->files[i]);
		int err = 0;

		if (!target)
			err = ENOMEM;
		else if (!same_dir(top->files[i], s->path))
			err = EXDEV;
		else if (HOOKED(link(top->files[i], target)) < 0)
			err = errno;
		free(target);
		if (err) {
			unlink_extent_targets(s, top, i);
			return snap_fail(
				s, -err, "%s: cannot move it to %s: %s",
				top->files[i], s->dir,
				err == EXDEV
					? "the extent is not in the image's directory"
					: strerror(err));
		}
	}
	return 0;
}

static bool opens_quietly(const char *path)
{
	struct img_open_options opts = { .flags = IMG_OPEN_RDONLY };
	char errbuf[IMG_ERRMSG_MAX];
	struct img *img;

	if (img_open(&img, path, &opts, errbuf, sizeof(errbuf)) < 0)
		return false;
	img_close(img);
	return true;
}

/* VDI names its parent by UUID only, searched next to the image: a layer
 * in the folder does not see the disk's original backing files.  Symbolic
 * links to them in the folder make them visible (relative when they lie
 * next to the disk, so the pair can move). */
static int link_ancestors(struct img_snapshots *s)
{
	for (int i = 1; i < s->nlayers; i++) {
		const struct snapshot_layer *l = &s->layers[i];
		char real[PATH_MAX], *link_path = NULL, *target = NULL;
		const char *base = base_name(l->path);
		struct stat st;
		int r = 0;

		if (l->name[0])
			continue;
		if (asprintf(&link_path, "%s/%s", s->dir, base) < 0)
			return snap_fail(s, -ENOMEM, "out of memory");
		if (lstat(link_path, &st) == 0) {
			free(link_path);
			continue;
		}
		if (!realpath(l->path, real))
			r = -errno;
		else if (!same_dir(l->path, s->path))
			target = strdup(real);
		else if (asprintf(&target, "../%s", base) < 0)
			target = NULL;
		if (r == 0 &&
		    (!target || HOOKED(symlink(target, link_path)) < 0))
			r = target ? -errno : -ENOMEM;
		if (r < 0)
			snap_fail(s, r, "%s: %s", link_path, strerror(-r));
		free(target);
		free(link_path);
		if (r < 0)
			return r;
	}
	return 0;
}

static int layers_create(struct img_snapshots *s, const char *tag)
{
	struct snapshot_layer *top, *parent, layer;
	bool new_ref = false, linked = false;
	struct stat st;
	char *path;
	int r;

	r = layers_load(s, 0);
	if (r < 0)
		return r;
	top = &s->layers[0];
	parent = s->nlayers > 1 ? &s->layers[1] : NULL;
	path = layer_path_for(s, tag);
	if (!path)
		return snap_fail(s, -ENOMEM, "out of memory");
	if (lstat(path, &st) == 0 || layer_find(s, tag) >= 0) {
		r = snap_fail(s, -EEXIST, "%s: snapshot '%s' already exists",
			      s->path, tag);
		goto out;
	}
	r = pending_begin(s, PENDING_CREATE, tag);
	if (r < 0)
		goto out;
	/* Second names for the current contents; the disk itself is
	 * replaced only once its successor is complete. */
	r = link_extents(s, top);
	if (r < 0)
		goto undo;
	if (HOOKED(link(s->path, path)) < 0) {
		r = snap_fail(s, -errno, "%s: %s", path, strerror(errno));
		goto undo;
	}
	linked = true;
	layer = *top;
	layer.path = path;
	if (parent && !top->backing_recorded[0] && !opens_quietly(path)) {
		r = link_ancestors(s);
		if (r < 0)
			goto undo;
	}
	/* A parent recorded by a relative path must be found from the
	 * folder too: record it by its absolute path, which holds from
	 * both places, until the disk has been replaced. */
	if (parent && top->backing_recorded[0] &&
	    top->backing_recorded[0] != '/' && !opens_quietly(path)) {
		char real[PATH_MAX];

		if (!realpath(parent->path, real)) {
			r = snap_fail(s, -errno, "%s: %s", parent->path,
				      strerror(errno));
			goto undo;
		}
		r = refresh_child(s, path, top->format, parent->path,
				  parent->format, real);
		if (r < 0)
			goto undo;
		new_ref = true;
	}
	r = index_add(s, tag);
	if (r == 0)
		r = index_save(s);
	if (r == 0)
		r = replace_disk(s, &layer);
	if (r < 0) {
		index_remove(s, tag);
		index_save(s);
		goto undo;
	}
	/* Done: the extents belong to the layer only, and the parent is
	 * named relative to the layer again (the absolute name still works
	 * if this cannot be written). */
	for (int i = 0; i < top->nfiles; i++)
		HOOKED(unlink(top->files[i]));
	if (new_ref)
		refresh_child(s, path, top->format, parent->path,
			      parent->format, NULL);
	pending_end(s);
	r = 0;
	goto out;
undo:
	if (new_ref) {
		char keep[IMG_ERRMSG_MAX];

		memcpy(keep, s->errmsg, sizeof(keep));
		refresh_child(s, path, top->format, parent->path,
			      parent->format, top->backing_recorded);
		memcpy(s->errmsg, keep, sizeof(keep));
	}
	if (linked)
		HOOKED(unlink(path));
	unlink_extent_targets(s, top, top->nfiles);
	pending_end(s);
out:
	free(path);
	return r;
}

/* ---- revert and delete ----------------------------------------------------*/

static int layers_revert(struct img_snapshots *s, const char *tag,
			 unsigned flags)
{
	int idx, r;

	r = layers_load(s, 0);
	if (r < 0)
		return r;
	idx = layer_find(s, tag);
	if (idx < 0)
		return snap_fail(s, -ENOENT, "%s: no snapshot named '%s'",
				 s->path, tag);
	if (idx > 1 && !(flags & IMG_SNAPSHOT_REVERT_DISCARD_NEWER))
		return snap_fail(
			s, -ENOTEMPTY,
			"%s: snapshot '%s' is newer than '%s'; reverting would discard it too",
			s->path, s->layers[1].name, tag);
	r = pending_begin(s, PENDING_REVERT, tag);
	if (r < 0)
		return r;
	r = replace_disk(s, &s->layers[idx]);
	if (r < 0) {
		pending_end(s);
		return r;
	}
	/* Newer snapshots are no longer part of the disk's history. */
	for (int i = 1; i < idx; i++) {
		if (!s->layers[i].name[0])
			continue;
		layer_remove_files(&s->layers[i]);
		index_remove(s, s->layers[i].name);
	}
	index_save(s);
	pending_end(s);
	return 0;
}

/* Pull layer idx's data into its child and take it out of the chain;
 * its files stay (the caller removes them). */
static int layers_unlink_from_chain(struct img_snapshots *s, int idx)
{
	const struct snapshot_layer *child = &s->layers[idx - 1];
	const struct snapshot_layer *layer = &s->layers[idx];
	const struct snapshot_layer *parent =
		idx + 1 < s->nlayers ? &s->layers[idx + 1] : NULL;
	struct img_open_options co = { .format = child->format,
				       .flags = IMG_OPEN_RDWR };
	struct img_open_options lo = { .format = layer->format,
				       .flags = IMG_OPEN_RDONLY |
						IMG_OPEN_NO_BACKING };
	struct img *c = NULL, *l = NULL;
	char errbuf[IMG_ERRMSG_MAX];
	char *ref = NULL;
	int r;

	r = img_open(&c, child->path, &co, errbuf, sizeof(errbuf));
	if (r == 0)
		r = img_open(&l, layer->path, &lo, errbuf, sizeof(errbuf));
	if (r < 0) {
		snap_fail(s, r, "%s", errbuf);
		goto out;
	}
	/* only where the child has nothing of its own: it reads the same */
	r = img_copy_layer(l, c, IMG_COPY_ONLY_UNALLOCATED);
	if (r < 0) {
		snap_fail(s, r, "%s", img_errmsg(c));
		goto out;
	}
	r = img_flush(c);
	if (r < 0) {
		snap_fail(s, r, "%s", img_errmsg(c));
		goto out;
	}
	if (parent) {
		struct img *p = img_backing(img_backing(c));

		ref = img_parent_reference(child->path, parent->path);
		if (!ref || !p) {
			r = snap_fail(s, -ENOENT,
				      "%s: cannot reach the parent %s",
				      child->path, parent->path);
			goto out;
		}
		r = img_set_backing(c, ref, parent->format, p);
	} else {
		r = img_set_backing(c, NULL, NULL, NULL);
	}
	if (r < 0) {
		snap_fail(s, r, "%s", img_errmsg(c));
		goto out;
	}
	r = img_close(c);
	c = NULL;
	if (r < 0) {
		snap_fail(s, r, "%s: flush failed: %s", child->path,
			  strerror(-r));
		goto out;
	}
	/* The child changed: its own child records it anew. */
	if (idx >= 2)
		r = refresh_child(s, s->layers[idx - 2].path,
				  s->layers[idx - 2].format, child->path,
				  child->format, NULL);
out:
	if (c)
		img_close(c);
	if (l)
		img_close(l);
	free(ref);
	return r;
}

static int layers_delete(struct img_snapshots *s, const char *tag)
{
	int idx, r;

	r = layers_load(s, 0);
	if (r < 0)
		return r;
	idx = layer_find(s, tag);
	if (idx < 0)
		return snap_fail(s, -ENOENT, "%s: no snapshot named '%s'",
				 s->path, tag);
	r = pending_begin(s, PENDING_DELETE, tag);
	if (r < 0)
		return r;
	r = layers_unlink_from_chain(s, idx);
	if (r < 0) {
		/* The chain still reads the same: the copy only filled the
		 * child where it fell through to the layer.  The marker
		 * stays when a link may be out of date (recovery renews). */
		if (!opens_quietly(s->path))
			return r;
		pending_end(s);
		return r;
	}
	layer_remove_files(&s->layers[idx]);
	index_remove(s, tag);
	index_save(s);
	pending_end(s);
	return 0;
}

/* ---- recovery -----------------------------------------------------------*/

/* The interrupted create had not replaced the disk yet (the disk and the
 * layer are still one file): take the layer's names away again. */
static int recover_undo_create(struct img_snapshots *s, const char *tag,
			       const char *layer_path)
{
	int r = layers_load(s, 0);

	if (r < 0)
		return r;
	unlink_extent_targets(s, &s->layers[0], s->layers[0].nfiles);
	if (HOOKED(unlink(layer_path)) < 0 && errno != ENOENT)
		return snap_fail(s, -errno, "%s: %s", layer_path,
				 strerror(errno));
	index_remove(s, tag);
	return index_save(s);
}

/* The disk replaced, the extents of its old self still have second
 * names next to it: remove those. */
static void recover_finish_create(struct img_snapshots *s, const char *tag)
{
	int idx = layer_find(s, tag);

	if (idx < 0)
		return;
	for (int i = 0; i < s->layers[idx].nfiles; i++) {
		const char *f = s->layers[idx].files[i];
		char *old = NULL;

		if (asprintf(&old, "%s/%s", dirname(strdupa(s->path)),
			     base_name(f)) < 0)
			continue;
		if (!same_dir(f, s->path) && same_file(old, f))
			HOOKED(unlink(old));
		free(old);
	}
	if (!index_find(s, tag))
		index_add(s, tag);
}

/* The chain does not open (a delete stopped after a child changed and
 * before its own child recorded it anew): record every link of the
 * disk's own layers again, as it is recorded. */
static int recover_relink(struct img_snapshots *s)
{
	int r = layers_load(s, IMG_OPEN_FORCE);

	if (r < 0)
		return r;
	for (int i = s->nlayers - 2; i >= 0; i--) {
		struct snapshot_layer *child = &s->layers[i];
		struct snapshot_layer *parent = &s->layers[i + 1];

		if (i > 0 && !child->name[0])
			continue;
		r = refresh_child(s, child->path, child->format, parent->path,
				  parent->format, child->backing_recorded);
		if (r < 0)
			return r;
	}
	return 0;
}

/* Snapshots in the index whose layer is no longer in the chain (a revert
 * or delete stopped before its clean-up): remove their files and
 * entries. */
static int recover_prune(struct img_snapshots *s)
{
	bool changed = false;

	for (int i = 0; i < s->nentries;) {
		const char *name = s->entries[i].name;
		char *path;

		if (layer_find(s, name) >= 0) {
			i++;
			continue;
		}
		path = layer_path_for(s, name);
		if (path && access(path, F_OK) == 0) {
			struct img_open_options lo = {
				.flags = IMG_OPEN_RDONLY | IMG_OPEN_NO_BACKING |
					 IMG_OPEN_CHECK,
			};
			char errbuf[IMG_ERRMSG_MAX];
			struct img_info *info = NULL;
			struct img *l;

			if (img_open(&l, path, &lo, errbuf, sizeof(errbuf)) ==
			    0) {
				if (img_get_info(l, &info) == 0)
					for (int j = 0; j < info->nfiles; j++)
						if (!same_file(info->files[j],
							       path))
							HOOKED(unlink(
								info->files[j]));
				img_info_free(info);
				img_close(l);
			}
			HOOKED(unlink(path));
		}
		free(path);
		index_remove(s, name);
		changed = true;
	}
	return changed ? index_save(s) : 0;
}

static int recover(struct img_snapshots *s, enum pending_op op, const char *tag)
{
	char *tmp = NULL, *layer_path = NULL;
	int r = 0;

	if (asprintf(&tmp, "%s.snapshot-tmp", s->path) < 0)
		return snap_fail(s, -ENOMEM, "out of memory");
	HOOKED(unlink(tmp));
	free(tmp);
	if ((int)op >= 0 && img_snapshot_tag_valid(tag)) {
		layer_path = layer_path_for(s, tag);
		if (!layer_path)
			return snap_fail(s, -ENOMEM, "out of memory");
	}
	if (op == PENDING_CREATE && layer_path &&
	    same_file(layer_path, s->path)) {
		r = recover_undo_create(s, tag, layer_path);
		goto out;
	}
	if (!opens_quietly(s->path)) {
		r = recover_relink(s);
		if (r < 0)
			goto out;
	}
	r = layers_load(s, 0);
	if (r < 0)
		goto out;
	if (op == PENDING_CREATE && layer_path)
		recover_finish_create(s, tag);
	if (op == PENDING_DELETE && layer_path) {
		int idx = layer_find(s, tag);

		if (idx > 0) {
			r = layers_unlink_from_chain(s, idx);
			if (r < 0)
				goto out;
			layer_remove_files(&s->layers[idx]);
		}
		r = layers_load(s, 0);
		if (r < 0)
			goto out;
	}
	r = recover_prune(s);
out:
	free(layer_path);
	if (r == 0)
		pending_end(s);
	return r;
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
		     base_name(path)) < 0)
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
	layers_free(s);
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
	const char *dot, *base = base_name(s->path);
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
	index_load(s);
	op = pending_read(s->dir, tag, sizeof(tag));
	if (op == -ENOENT)
		return 0;
	if (!writer)
		return img_error_buf(
			errbuf, errlen, -EUCLEAN,
			"%s: a snapshot %s of '%s' was interrupted; a writer (imgtool snapshot, imgtool check -r) finishes it",
			s->path, op >= 0 ? pending_ops[op] : "change", tag);
	r = recover(s, op, tag);
	if (r < 0)
		return img_error_buf(
			errbuf, errlen, r,
			"%s: cannot finish an interrupted snapshot %s: %s",
			s->path, op >= 0 ? pending_ops[op] : "change",
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
	r = layers_load(s, 0);
	if (r < 0)
		return r;
	out = calloc(s->nlayers, sizeof(*out));
	if (!out)
		return snap_fail(s, -ENOMEM, "out of memory");
	for (int i = 1; i < s->nlayers; i++) {
		const struct snapshot_layer *l = &s->layers[i];
		struct snapshot_index_entry *ie;
		struct img_snapshot_entry *e;
		struct stat st;

		if (!l->name[0])
			continue;
		e = &out[n++];
		snprintf(e->name, sizeof(e->name), "%s", l->name);
		ie = index_find(s, l->name);
		e->created = ie			       ? ie->created
			     : stat(l->path, &st) == 0 ? (int64_t)st.st_mtime
						       : 0;
		e->virtual_size = l->virtual_size;
		e->disk_usage = l->actual_size;
		snprintf(e->path, sizeof(e->path), "%s", l->path);
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
	r = layers_load(s, 0);
	if (r < 0)
		return r;
	if (layer_find(s, tag) < 0)
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
	return layers_create(s, tag);
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
	return layers_revert(s, tag, flags);
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
	return layers_delete(s, tag);
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
	idx = layer_find(s, tag);
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
	op = pending_read(dir, tag, sizeof(tag));
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
	/* flat: the layers, the index and the lock file */
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
