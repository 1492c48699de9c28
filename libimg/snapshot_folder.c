/* SPDX-License-Identifier: MIT */
/*
 * The snapshot folder DISK.snapshots/ (see snapshot.c): its index of
 * creation dates, the pending-operation marker, and the disk's chain of
 * layers as the snapshot operations see it.  Files here are replaced by
 * a temporary file, fsync and rename(), each step through the I/O hook.
 */
#include "snapshot_folder.h"

#include "backend.h"

#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

const char *const snap_pending_ops[] = { "create", "revert", "delete" };

int snap_fail(struct img_snapshots *s, int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(s->errmsg, sizeof(s->errmsg), fmt, ap);
	va_end(ap);
	return err;
}

/* Every change to a directory passes the I/O hook (crash tests). */
int snap_dir_change_hook(void)
{
	return img_file_run_io_hook(IMG_IO_DIRECTORY, -1, 0, 0);
}

bool snap_same_file(const char *a, const char *b)
{
	struct stat sa, sb;

	return stat(a, &sa) == 0 && stat(b, &sb) == 0 &&
	       sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

bool snap_same_dir(const char *a, const char *b)
{
	char *ca = strdup(a), *cb = strdup(b);
	char ra[PATH_MAX], rb[PATH_MAX];
	bool same = ca && cb && realpath(dirname(ca), ra) &&
		    realpath(dirname(cb), rb) && strcmp(ra, rb) == 0;

	free(ca);
	free(cb);
	return same;
}

const char *snap_base_name(const char *path)
{
	const char *slash = strrchr(path, '/');

	return slash ? slash + 1 : path;
}

void snap_sync_dir(int fd)
{
	if (fd >= 0 && snap_dir_change_hook() == 0)
		fsync(fd);
}

/* ---- the index and the pending operation --------------------------------*/

void snap_index_load(struct img_snapshots *s)
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
int snap_write_file_atomic(struct img_snapshots *s, const char *name,
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
		snap_sync_dir(s->dir_fd);
out:
	if (r < 0)
		snap_fail(s, r, "%s/%s: cannot write: %s", s->dir, name,
			  strerror(-r));
	free(path);
	free(tmp);
	return r;
}

int snap_index_save(struct img_snapshots *s)
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
	r = snap_write_file_atomic(s, "index", text);
	free(text);
	return r;
}

struct snapshot_index_entry *snap_index_find(struct img_snapshots *s,
					     const char *name)
{
	for (int i = 0; i < s->nentries; i++)
		if (strcmp(s->entries[i].name, name) == 0)
			return &s->entries[i];
	return NULL;
}

void snap_index_remove(struct img_snapshots *s, const char *name)
{
	struct snapshot_index_entry *e = snap_index_find(s, name);

	if (!e)
		return;
	memmove(e, e + 1,
		(size_t)(&s->entries[s->nentries] - (e + 1)) * sizeof(*e));
	s->nentries--;
}

int snap_index_add(struct img_snapshots *s, const char *name)
{
	struct snapshot_index_entry *e;

	snap_index_remove(s, name);
	e = realloc(s->entries, (s->nentries + 1) * sizeof(*e));
	if (!e)
		return snap_fail(s, -ENOMEM, "out of memory");
	s->entries = e;
	e = &s->entries[s->nentries++];
	snprintf(e->name, sizeof(e->name), "%s", name);
	e->created = (int64_t)time(NULL);
	return 0;
}

int snap_pending_begin(struct img_snapshots *s, enum pending_op op,
		       const char *tag)
{
	char text[IMG_SNAPSHOT_TAG_MAX + 16];

	snprintf(text, sizeof(text), "%s %s\n", snap_pending_ops[op], tag);
	return snap_write_file_atomic(s, "pending", text);
}

void snap_pending_end(struct img_snapshots *s)
{
	char *path = NULL;

	if (asprintf(&path, "%s/pending", s->dir) < 0)
		return;
	if (HOOKED(unlink(path)) == 0)
		snap_sync_dir(s->dir_fd);
	free(path);
}

/* The operation under way, or -ENOENT; tag gets its name. */
int snap_pending_read(const char *dir, char *tag, size_t taglen)
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
			if (strcmp(line, snap_pending_ops[i]) == 0)
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

void snap_layers_free(struct img_snapshots *s)
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
bool snap_layer_name_in_dir(struct img_snapshots *s, const char *path,
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
	snprintf(name, IMG_SNAPSHOT_TAG_MAX + 1, "%s", snap_base_name(path));
	dot = strrchr(name, '.');
	if (dot && dot != name)
		*dot = '\0';
	return img_snapshot_tag_valid(name);
}

/* Learn the chain of the disk: paths, formats, references, files. */
int snap_layers_load(struct img_snapshots *s, unsigned extra_flags)
{
	struct img_open_options oo = { .format = s->format,
				       .flags = IMG_OPEN_RDONLY | extra_flags };
	struct img_info *info = NULL;
	struct img *img = NULL;
	char errbuf[IMG_ERRMSG_MAX];
	int r;

	snap_layers_free(s);
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
			if (snap_same_file(info->files[i], layer->path))
				continue;
			layer->files[layer->nfiles] = strdup(info->files[i]);
			if (!layer->files[layer->nfiles++]) {
				r = snap_fail(s, -ENOMEM, "out of memory");
				goto out;
			}
		}
		if (l != img)
			snap_layer_name_in_dir(s, layer->path, layer->name);
	}
	r = 0;
out:
	img_close(img);
	img_info_free(info);
	return r;
}

int snap_layer_find(struct img_snapshots *s, const char *tag)
{
	for (int i = 1; i < s->nlayers; i++)
		if (strcmp(s->layers[i].name, tag) == 0)
			return i;
	return -1;
}

char *snap_layer_path(struct img_snapshots *s, const char *tag)
{
	char *out = NULL;

	if (asprintf(&out, "%s/%s.%s", s->dir, tag, s->ext) < 0)
		return NULL;
	return out;
}
