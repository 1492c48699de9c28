/* SPDX-License-Identifier: MIT */
/*
 * imgtool snapshot: named states of a disk whose path never changes.
 *
 * `create NAME` turns FILE's current contents into a read-only layer
 * FILE.snapshots/NAME.EXT and makes FILE a fresh differencing image over
 * it; snapshots are the chain's layers that live in FILE.snapshots/.
 * `revert NAME` replaces FILE by a fresh child of NAME; `delete NAME`
 * pulls NAME's data into its child and takes NAME out of the chain.  A
 * small index (FILE.snapshots/index: name, creation time) keeps the dates.
 *
 * Crash safety: FILE is only ever replaced by rename() of a complete new
 * image; a layer's data is copied into its child before the child stops
 * referring to it, and the layer's file is removed last.
 */
#include "tools/chain.h"
#include "tools/cmdline.h"

#include "img.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SNAPSHOT_NAME_MAX 64
#define SNAPSHOT_MAX_LAYERS 64
#define SNAPSHOT_MAX_ENTRIES 256

struct snapshot_layer {
	char path[PATH_MAX];
	char format[16];
	char backing_recorded[PATH_MAX]; /* parent reference as stored */
	uint64_t virtual_size;
	uint64_t actual_size;
	/* Further files of the layer (VMDK extents), paths from cwd. */
	int nfiles;
	char **files;
	char name[SNAPSHOT_NAME_MAX + 1]; /* "" unless in FILE.snapshots/ */
};

struct snapshot_entry {
	char name[SNAPSHOT_NAME_MAX + 1];
	int64_t created;
};

struct snapshot_ctx {
	const char *file;
	char *snapdir;
	char ext[16];
	int nlayers;
	struct snapshot_layer *layers; /* [0] is FILE itself */
	int nentries;
	struct snapshot_entry entries[SNAPSHOT_MAX_ENTRIES];
};

static void snapshot_usage(FILE *out)
{
	fprintf(out,
		"Usage: imgtool snapshot create FILE NAME\n"
		"       imgtool snapshot list FILE\n"
		"       imgtool snapshot revert [--force] FILE NAME\n"
		"       imgtool snapshot delete FILE NAME\n"
		"Named states of the disk FILE (vdi, vhd, vhdx, vmdk); FILE's path never changes.\n"
		"Formats with internal snapshots (qcow2) keep them inside FILE.\n"
		"\n"
		"  create   keep the current contents as snapshot NAME (a read-only layer\n"
		"           FILE.snapshots/NAME.EXT); FILE becomes a fresh differencing\n"
		"           image over it\n"
		"  list     the chain, newest first: names, dates, sizes\n"
		"  revert   discard everything written since NAME (NAME is kept);\n"
		"           --force also discards snapshots newer than NAME\n"
		"  delete   remove snapshot NAME; what the disk reads does not change\n"
		"  -f FMT   format of FILE (default: probed)\n"
		"  -q       quiet\n"
		"Exit status: 0 success, 1 failure, 2 usage error.\n");
}

static bool snapshot_name_valid(const char *name)
{
	size_t len = strlen(name);

	if (len == 0 || len > SNAPSHOT_NAME_MAX || name[0] == '.' ||
	    name[0] == '-')
		return false;
	for (const char *p = name; *p; p++)
		if (!isalnum((unsigned char)*p) && !strchr("._-+@", *p))
			return false;
	return strcmp(name, "index") != 0;
}

static char *snapshot_layer_path(struct snapshot_ctx *s, const char *name)
{
	char *out = NULL;

	if (asprintf(&out, "%s/%s.%s", s->snapdir, name, s->ext) < 0)
		return NULL;
	return out;
}

/* ---- the index ---------------------------------------------------------*/

static void snapshot_index_load(struct snapshot_ctx *s)
{
	char *path = NULL, line[256];
	FILE *f;

	s->nentries = 0;
	if (asprintf(&path, "%s/index", s->snapdir) < 0)
		return;
	f = fopen(path, "r");
	free(path);
	if (!f)
		return;
	while (fgets(line, sizeof(line), f) &&
	       s->nentries < SNAPSHOT_MAX_ENTRIES) {
		struct snapshot_entry *e = &s->entries[s->nentries];
		char *tab = strchr(line, '\t');

		if (!tab)
			continue;
		*tab = '\0';
		if (!snapshot_name_valid(line))
			continue;
		memcpy(e->name, line, strlen(line) + 1);
		e->created = strtoll(tab + 1, NULL, 10);
		s->nentries++;
	}
	fclose(f);
}

static int snapshot_index_save(struct snapshot_ctx *s)
{
	char *path = NULL, *tmp = NULL;
	int ret = -ENOMEM;
	FILE *f;

	if (asprintf(&path, "%s/index", s->snapdir) < 0 ||
	    asprintf(&tmp, "%s/index.tmp", s->snapdir) < 0)
		goto out;
	f = fopen(tmp, "w");
	if (!f) {
		ret = -errno;
		unlink(tmp);
		goto out;
	}
	fprintf(f,
		"# imgtool snapshots of this directory's image: name, created (Unix time)\n");
	for (int i = 0; i < s->nentries; i++)
		fprintf(f, "%s\t%" PRId64 "\n", s->entries[i].name,
			s->entries[i].created);
	if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
		ret = -errno;
		fclose(f);
		unlink(tmp);
		goto out;
	}
	if (fclose(f) != 0) {
		ret = -errno;
		unlink(tmp);
		goto out;
	}
	ret = rename(tmp, path) < 0 ? -errno : 0;
out:
	if (ret < 0)
		tool_error("%s/index: cannot write: %s", s->snapdir,
			   strerror(-ret));
	free(path);
	free(tmp);
	return ret;
}

static struct snapshot_entry *snapshot_index_find(struct snapshot_ctx *s,
						  const char *name)
{
	for (int i = 0; i < s->nentries; i++)
		if (strcmp(s->entries[i].name, name) == 0)
			return &s->entries[i];
	return NULL;
}

static void snapshot_index_remove(struct snapshot_ctx *s, const char *name)
{
	struct snapshot_entry *e = snapshot_index_find(s, name);

	if (!e)
		return;
	memmove(e, e + 1,
		(size_t)(&s->entries[s->nentries] - (e + 1)) * sizeof(*e));
	s->nentries--;
}

/* ---- the chain ---------------------------------------------------------*/

/* Is path directly inside s->snapdir?  Then name gets its snapshot name. */
static bool snapshot_layer_name(struct snapshot_ctx *s, const char *path,
				char *name)
{
	char dir_real[PATH_MAX], snap_real[PATH_MAX];
	char *copy = strdup(path), *base, *dot;
	bool inside = false;

	struct stat st;

	name[0] = '\0';
	if (!copy)
		return false;
	/* Links to original backing files are not snapshots. */
	if (lstat(path, &st) == 0 && S_ISLNK(st.st_mode)) {
		free(copy);
		return false;
	}
	if (realpath(dirname(copy), dir_real) &&
	    realpath(s->snapdir, snap_real) && strcmp(dir_real, snap_real) == 0)
		inside = true;
	free(copy);
	if (!inside)
		return false;
	copy = strdup(path);
	if (!copy)
		return false;
	base = basename(copy);
	dot = strrchr(base, '.');
	if (dot && dot != base)
		*dot = '\0';
	if (strlen(base) > SNAPSHOT_NAME_MAX)
		base[SNAPSHOT_NAME_MAX] = '\0';
	memcpy(name, base, strlen(base) + 1);
	free(copy);
	return true;
}

static int snapshot_load_chain(struct snapshot_ctx *s, const char *format)
{
	struct img_info *info = NULL;
	struct img *img = NULL;
	int ret = -ENOMEM;

	s->layers = calloc(SNAPSHOT_MAX_LAYERS, sizeof(*s->layers));
	if (!s->layers) {
		tool_error("out of memory");
		goto out;
	}
	ret = tool_open(&img, s->file, format, IMG_OPEN_RDONLY);
	if (ret < 0)
		goto out;
	s->nlayers = 0;
	for (struct img *l = img; l && s->nlayers < SNAPSHOT_MAX_LAYERS;
	     l = img_backing(l)) {
		struct snapshot_layer *layer = &s->layers[s->nlayers++];

		img_info_free(info);
		ret = img_get_info(l, &info);
		if (ret < 0) {
			cmdline_img_error(l, ret);
			goto out;
		}
		snprintf(layer->path, sizeof(layer->path), "%s",
			 img_filename(l));
		snprintf(layer->format, sizeof(layer->format), "%s",
			 img_format(l));
		snprintf(layer->backing_recorded,
			 sizeof(layer->backing_recorded), "%s",
			 info->backing_filename);
		layer->virtual_size = img_size(l);
		layer->actual_size = info->actual_size;
		layer->files = calloc(info->nfiles + 1, sizeof(char *));
		if (!layer->files) {
			ret = -ENOMEM;
			goto out;
		}
		for (int i = 0; i < info->nfiles; i++) {
			if (chain_same_file(info->files[i], layer->path))
				continue;
			layer->files[layer->nfiles] = strdup(info->files[i]);
			if (!layer->files[layer->nfiles++]) {
				ret = -ENOMEM;
				goto out;
			}
		}
		if (l != img)
			snapshot_layer_name(s, layer->path, layer->name);
	}
	ret = 0;
out:
	if (img)
		img_close(img);
	img_info_free(info);
	return ret;
}

/* Index of snapshot NAME in the chain (>= 1), or -1 with a message. */
static int snapshot_find_layer(struct snapshot_ctx *s, const char *name)
{
	for (int i = 1; i < s->nlayers; i++)
		if (strcmp(s->layers[i].name, name) == 0)
			return i;
	tool_error("%s: no snapshot named '%s' (see imgtool snapshot list)",
		   s->file, name);
	return -1;
}

/* Create a fresh child of parent at a temporary name next to FILE and
 * rename it over FILE. */
static int snapshot_replace_file(struct snapshot_ctx *s,
				 const struct snapshot_layer *parent)
{
	struct img_create_options co = {
		.format = s->layers[0].format,
		.size = s->layers[0].virtual_size,
		.backing_format = parent->format,
	};
	char errbuf[IMG_ERRMSG_MAX] = "";
	char *ref = chain_parent_reference(s->file, parent->path);
	char *tmp = NULL;
	int ret = -ENOMEM;

	if (!ref || asprintf(&tmp, "%s.snapshot-tmp", s->file) < 0) {
		tool_error("%s: cannot name %s: %s", s->file, parent->path,
			   strerror(errno));
		goto out;
	}
	co.backing_file = ref;
	ret = img_create(tmp, &co, errbuf, sizeof(errbuf));
	if (ret < 0) {
		tool_error("%s", errbuf[0] ? errbuf : strerror(-ret));
		unlink(tmp);
		goto out;
	}
	if (rename(tmp, s->file) < 0) {
		ret = -errno;
		tool_error("%s: %s", s->file, strerror(errno));
		unlink(tmp);
	}
out:
	free(ref);
	free(tmp);
	return ret;
}

/* ---- the subcommands ---------------------------------------------------*/

/* Remove every file of a layer (descriptor and extents). */
static void snapshot_remove_layer(const struct snapshot_layer *l)
{
	if (unlink(l->path) < 0)
		tool_error("%s: %s", l->path, strerror(errno));
	for (int i = 0; i < l->nfiles; i++)
		if (unlink(l->files[i]) < 0)
			tool_error("%s: %s", l->files[i], strerror(errno));
}

/* Path of extent file f once linked into the snapshot directory. */
static char *snapshot_extent_target(struct snapshot_ctx *s, const char *f)
{
	const char *base = strrchr(f, '/');
	char *out = NULL;

	if (asprintf(&out, "%s/%s", s->snapdir, base ? base + 1 : f) < 0)
		return NULL;
	return out;
}

/* Are f's and FILE's directories the same?  Extents are named relative to
 * the descriptor, so they can move along only from there. */
static bool snapshot_same_dir(const char *a, const char *b)
{
	char *ca = strdup(a), *cb = strdup(b);
	char ra[PATH_MAX], rb[PATH_MAX];
	bool same = ca && cb && realpath(dirname(ca), ra) &&
		    realpath(dirname(cb), rb) && strcmp(ra, rb) == 0;

	free(ca);
	free(cb);
	return same;
}

/* Give the extents of FILE second names in the snapshot directory.
 * Returns how many were linked, or -errno (those undone). */
static int snapshot_link_extents(struct snapshot_ctx *s,
				 const struct snapshot_layer *top)
{
	int i;

	for (i = 0; i < top->nfiles; i++) {
		char *target = snapshot_extent_target(s, top->files[i]);
		int err = 0;

		if (!target)
			err = ENOMEM;
		else if (!snapshot_same_dir(top->files[i], s->file))
			err = EXDEV;
		else if (link(top->files[i], target) < 0)
			err = errno;
		if (err) {
			tool_error(
				"%s: cannot move it to %s: %s", top->files[i],
				s->snapdir,
				err == EXDEV
					? "the extent is not in the image's directory"
					: strerror(err));
			free(target);
			while (i-- > 0) {
				target = snapshot_extent_target(s,
								top->files[i]);
				if (target)
					unlink(target);
				free(target);
			}
			return -err;
		}
		free(target);
	}
	return i;
}

/* Does the image at path open with its whole chain (quietly)? */
static bool snapshot_opens(const char *path)
{
	struct img_open_options opts = { .flags = IMG_OPEN_RDONLY };
	char errbuf[IMG_ERRMSG_MAX];
	struct img *img;

	if (img_open(&img, path, &opts, errbuf, sizeof(errbuf)) < 0)
		return false;
	img_close(img);
	return true;
}

/* VDI names its parent by UUID only, and parents are searched next to the
 * image: a layer in FILE.snapshots/ does not see FILE's original backing
 * files.  Symbolic links to them in FILE.snapshots/ make them visible.
 * Returns the number of links made (recorded in made[]) or -errno. */
static int snapshot_link_ancestors(struct snapshot_ctx *s, char **made, int max)
{
	int n = 0;

	for (int i = 1; i < s->nlayers && n < max; i++) {
		const struct snapshot_layer *l = &s->layers[i];
		const char *base = strrchr(l->path, '/');
		char real[PATH_MAX], *link_path = NULL, *target;
		struct stat st;

		if (l->name[0])
			continue; /* already in FILE.snapshots/ */
		base = base ? base + 1 : l->path;
		if (asprintf(&link_path, "%s/%s", s->snapdir, base) < 0)
			return -ENOMEM;
		if (lstat(link_path, &st) == 0) {
			free(link_path);
			continue;
		}
		/* Relative when it lies next to FILE (the pair can move). */
		if (!realpath(l->path, real)) {
			int err = errno;

			tool_error("%s: %s", l->path, strerror(err));
			free(link_path);
			return -err;
		}
		if (!snapshot_same_dir(l->path, s->file))
			target = strdup(real);
		else if (asprintf(&target, "../%s", base) < 0)
			target = NULL;
		if (!target || symlink(target, link_path) < 0) {
			int err = target ? errno : ENOMEM;

			tool_error("%s: %s", link_path, strerror(err));
			free(target);
			free(link_path);
			return -err;
		}
		free(target);
		made[n++] = link_path;
	}
	return n;
}

static int snapshot_create(struct snapshot_ctx *s, const char *name)
{
	struct snapshot_layer *top = &s->layers[0];
	const struct snapshot_layer *parent = s->nlayers > 1 ? &s->layers[1]
							     : NULL;
	struct snapshot_layer layer;
	struct snapshot_entry *e;
	bool made_dir = false, new_ref = false;
	char *links[SNAPSHOT_MAX_LAYERS];
	int nlinks = 0;
	struct stat st;
	char *path;
	int ret = -1;

	if (!(img_format_caps(top->format) & IMG_FORMAT_BACKING)) {
		tool_error("%s: %s images have no differencing layers; convert "
			   "it to vdi, vhd, vhdx, vmdk or qcow2 first",
			   s->file, top->format);
		return -ENOTSUP;
	}
	path = snapshot_layer_path(s, name);
	if (!path)
		return -ENOMEM;
	if (lstat(path, &st) == 0) {
		tool_error("%s: snapshot '%s' already exists", s->file, name);
		ret = -EEXIST;
		goto out;
	}
	if (mkdir(s->snapdir, 0755) == 0)
		made_dir = true;
	else if (errno != EEXIST) {
		ret = -errno;
		tool_error("%s: %s", s->snapdir, strerror(errno));
		goto out;
	}
	/* Second names for the current contents; FILE itself is replaced
	 * only once its successor is complete. */
	ret = snapshot_link_extents(s, top);
	if (ret < 0)
		goto undo_dir;
	if (link(s->file, path) < 0) {
		ret = -errno;
		tool_error("%s: %s", path, strerror(errno));
		goto undo_extents;
	}
	layer = *top;
	snprintf(layer.path, sizeof(layer.path), "%s", path);
	if (parent && !top->backing_recorded[0] && !snapshot_opens(path)) {
		nlinks = snapshot_link_ancestors(s, links, SNAPSHOT_MAX_LAYERS);
		if (nlinks < 0) {
			ret = nlinks;
			nlinks = 0;
			goto undo;
		}
	}
	/* A parent recorded by a relative path must be found from
	 * FILE.snapshots/ too: record it by its absolute path, which holds
	 * from both places (FILE stays usable whatever happens next). */
	if (parent && top->backing_recorded[0] &&
	    top->backing_recorded[0] != '/' && !snapshot_opens(path)) {
		char real[PATH_MAX];

		if (!realpath(parent->path, real)) {
			ret = -errno;
			tool_error("%s: %s", parent->path, strerror(errno));
			goto undo;
		}
		ret = chain_refresh_child(path, top->format, parent->path,
					  parent->format, real);
		if (ret < 0)
			goto undo;
		new_ref = true;
	}
	/* The index first: a failure here still leaves FILE untouched. */
	snapshot_index_remove(s, name);
	if (s->nentries < SNAPSHOT_MAX_ENTRIES) {
		e = &s->entries[s->nentries++];
		snprintf(e->name, sizeof(e->name), "%s", name);
		e->created = (int64_t)time(NULL);
	}
	ret = snapshot_index_save(s);
	if (ret < 0)
		goto undo_ref;
	ret = snapshot_replace_file(s, &layer);
	if (ret < 0)
		goto undo_ref; /* the index entry alone is harmless */
	/* Done: the extents belong to the layer only, and the parent is
	 * named relative to the layer again (the absolute name still works
	 * if this cannot be written). */
	for (int i = 0; i < top->nfiles; i++)
		unlink(top->files[i]);
	if (parent && top->backing_recorded[0] &&
	    top->backing_recorded[0] != '/')
		chain_refresh_child(path, top->format, parent->path,
				    parent->format, NULL);
	ret = 0;
	goto out;
undo_ref:
	if (new_ref)
		chain_refresh_child(path, top->format, parent->path,
				    parent->format, top->backing_recorded);
undo:
	for (int i = 0; i < nlinks; i++)
		unlink(links[i]);
	unlink(path);
undo_extents:
	for (int i = 0; i < top->nfiles; i++) {
		char *target = snapshot_extent_target(s, top->files[i]);

		if (target)
			unlink(target);
		free(target);
	}
undo_dir:
	if (made_dir)
		rmdir(s->snapdir);
out:
	for (int i = 0; i < nlinks; i++)
		free(links[i]);
	free(path);
	return ret;
}

/* The snapshots the storage keeps of FILE itself (RBD), listed after the
 * chain's layers, each readable as the name with @SNAPSHOT. */
static void snapshot_list_backend(const char *file)
{
	struct img_backend_snapshot snaps[SNAPSHOT_MAX_ENTRIES];
	char errbuf[IMG_ERRMSG_MAX];
	const char *opts = strchr(file + 4, ':');
	int n = img_backend_snapshots(file, snaps, SNAPSHOT_MAX_ENTRIES, errbuf,
				      sizeof(errbuf));

	if (n == -ENOTSUP)
		return;
	if (n < 0) {
		tool_error("%s", errbuf);
		return;
	}
	for (int i = 0; i < n && i < SNAPSHOT_MAX_ENTRIES; i++) {
		char created[32] = "-", vsize[32];
		time_t t = (time_t)snaps[i].created;
		struct tm tm;

		if (t && localtime_r(&t, &tm))
			strftime(created, sizeof(created), "%Y-%m-%d %H:%M:%S",
				 &tm);
		img_format_size(snaps[i].size, vsize, sizeof(vsize));
		/* rbd:pool/image@snap:options */
		printf("%-20s %-19s %12s %12s  %.*s@%s%s\n", snaps[i].name,
		       created, vsize, "-",
		       (int)(opts ? (size_t)(opts - file) : strlen(file)), file,
		       snaps[i].name, opts ? opts : "");
	}
}

static int snapshot_list(struct snapshot_ctx *s)
{
	printf("%-20s %-19s %12s %12s  %s\n", "NAME", "CREATED", "VIRTUAL",
	       "ON DISK", "FILE");
	for (int i = 0; i < s->nlayers; i++) {
		const struct snapshot_layer *l = &s->layers[i];
		char created[32] = "-", vsize[32], asize[32];
		const char *name = l->name;
		struct snapshot_entry *e;

		if (i == 0)
			name = "(current)";
		else if (!name[0])
			name = "(backing file)";
		e = l->name[0] ? snapshot_index_find(s, l->name) : NULL;
		if (e || l->name[0]) {
			struct stat st;
			time_t t = 0;
			struct tm tm;

			if (e)
				t = (time_t)e->created;
			else if (stat(l->path, &st) == 0)
				t = st.st_mtime;
			if (t && localtime_r(&t, &tm))
				strftime(created, sizeof(created),
					 "%Y-%m-%d %H:%M:%S", &tm);
		}
		img_format_size(l->virtual_size, vsize, sizeof(vsize));
		img_format_size(l->actual_size, asize, sizeof(asize));
		printf("%-20s %-19s %12s %12s  %s\n", name, created, vsize,
		       asize, l->path);
	}
	if (strlen(s->file) > 4)
		snapshot_list_backend(s->file);
	return 0;
}

static int snapshot_revert(struct snapshot_ctx *s, const char *name, bool force)
{
	int idx = snapshot_find_layer(s, name);
	int ret;

	if (idx < 0)
		return -ENOENT;
	if (idx > 1 && !force) {
		tool_error(
			"%s: snapshot '%s' is newer than '%s'; reverting would discard it too (use --force, or delete it first)",
			s->file, s->layers[1].name, name);
		return -EBUSY;
	}
	ret = snapshot_replace_file(s, &s->layers[idx]);
	if (ret < 0)
		return ret;
	/* Newer snapshots are no longer part of the disk's history. */
	for (int i = 1; i < idx; i++) {
		if (!s->layers[i].name[0])
			continue;
		snapshot_remove_layer(&s->layers[i]);
		snapshot_index_remove(s, s->layers[i].name);
	}
	snapshot_index_save(s);
	return 0;
}

static int snapshot_delete(struct snapshot_ctx *s, const char *name)
{
	int idx = snapshot_find_layer(s, name);
	const struct snapshot_layer *child, *layer, *parent;
	struct img *c = NULL, *l = NULL;
	char *ref = NULL;
	int ret = -1;

	if (idx < 0)
		return -ENOENT;
	child = &s->layers[idx - 1];
	layer = &s->layers[idx];
	parent = idx + 1 < s->nlayers ? &s->layers[idx + 1] : NULL;

	/* The child, with its chain (which includes the layer, read-only),
	 * and the layer on its own. */
	ret = tool_open(&c, child->path, child->format, IMG_OPEN_RDWR);
	if (ret < 0)
		goto out;
	ret = tool_open(&l, layer->path, layer->format,
			IMG_OPEN_RDONLY | IMG_OPEN_NO_BACKING);
	if (ret < 0)
		goto out;
	ret = chain_copy_layer(l, c, true);
	if (ret < 0)
		goto out;
	ret = img_flush(c);
	if (ret < 0) {
		cmdline_img_error(c, ret);
		goto out;
	}
	if (parent) {
		struct img *p = img_backing(img_backing(c));

		ref = chain_parent_reference(child->path, parent->path);
		if (!ref || !p) {
			tool_error("%s: cannot reach the parent %s",
				   child->path, parent->path);
			ret = -ENOENT;
			goto out;
		}
		ret = img_set_backing(c, ref, parent->format, p);
	} else {
		ret = img_set_backing(c, NULL, NULL, NULL);
	}
	if (ret < 0) {
		cmdline_img_error(c, ret);
		goto out;
	}
	ret = img_close(c);
	c = NULL;
	if (ret < 0) {
		tool_error("%s: flush failed: %s", child->path, strerror(-ret));
		goto out;
	}
	/* The child changed: its own child must record it anew. */
	if (idx >= 2) {
		ret = chain_refresh_child(s->layers[idx - 2].path,
					  s->layers[idx - 2].format,
					  child->path, child->format, NULL);
		if (ret < 0)
			goto out;
	}
	img_close(l);
	l = NULL;
	snapshot_remove_layer(layer);
	snapshot_index_remove(s, name);
	snapshot_index_save(s);
	ret = 0;
out:
	if (c)
		img_close(c);
	if (l)
		img_close(l);
	free(ref);
	return ret;
}

/* Formats that keep snapshots inside the image (qcow2): the driver does
 * the work; FILE stays one file. */
static int snapshot_internal(struct img *img, const char *action,
			     const char *name)
{
	struct img_snapshot *list;
	int count, ret;

	if (strcmp(action, "list") == 0) {
		ret = img_snapshot_list(img, &list, &count);
		if (ret < 0) {
			cmdline_img_error(img, ret);
			return ret;
		}
		printf("%-6s %-20s %-19s %12s\n", "ID", "NAME", "CREATED",
		       "VIRTUAL");
		for (int i = count - 1; i >= 0; i--) {
			char created[32] = "-", vsize[32];
			time_t t = (time_t)list[i].date_sec;
			struct tm tm;

			if (t && localtime_r(&t, &tm))
				strftime(created, sizeof(created),
					 "%Y-%m-%d %H:%M:%S", &tm);
			img_format_size(list[i].disk_size, vsize,
					sizeof(vsize));
			printf("%-6s %-20s %-19s %12s\n", list[i].id,
			       list[i].name, created, vsize);
		}
		free(list);
		return 0;
	}
	if (strcmp(action, "create") == 0)
		ret = img_snapshot_create(img, name);
	else if (strcmp(action, "revert") == 0)
		ret = img_snapshot_apply(img, name);
	else
		ret = img_snapshot_delete(img, name);
	if (ret < 0)
		cmdline_img_error(img, ret);
	return ret;
}

int cmd_snapshot(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "force", no_argument, NULL, 'F' },
		{ "quiet", no_argument, NULL, 'q' },
		{ NULL, 0, NULL, 0 },
	};
	struct snapshot_ctx s = { 0 };
	const char *format = NULL, *action, *name = NULL, *dot, *base;
	bool force = false, quiet = false;
	int opt, ret = -1;

	opterr = 0;
	while ((opt = getopt_long(argc, argv, "hf:q", longopts, NULL)) != -1) {
		switch (opt) {
		case 'h':
			snapshot_usage(stdout);
			return 0;
		case 'f':
			format = optarg;
			break;
		case 'F':
			force = true;
			break;
		case 'q':
			quiet = true;
			break;
		default:
			return cmdline_bad_option("snapshot", argv);
		}
	}
	if (argc - optind < 2)
		return tool_usage_error("snapshot", "needs an action and FILE");
	action = argv[optind];
	s.file = argv[optind + 1];
	if (argc - optind > 2)
		name = argv[optind + 2];
	if (strcmp(action, "list") == 0) {
		if (name)
			return tool_usage_error("snapshot",
						"list takes only FILE");
	} else if (!strcmp(action, "create") || !strcmp(action, "revert") ||
		   !strcmp(action, "delete")) {
		if (!name || argc - optind != 3)
			return tool_usage_error(
				"snapshot", "%s needs FILE and NAME", action);
		if (!snapshot_name_valid(name))
			return tool_usage_error(
				"snapshot",
				"invalid name '%s' (letters, digits, . _ - + @; at most 64)",
				name);
	} else {
		return tool_usage_error("snapshot", "unknown action '%s'",
					action);
	}

	if (strcmp(action, "list") != 0 &&
	    img_backend_snapshots(s.file, NULL, 0, NULL, 0) != -ENOTSUP) {
		tool_error(
			"%s: the storage keeps its own snapshots: %s them with its tools (rbd snap %s)",
			s.file, action, action);
		return TOOL_EXIT_FAILURE;
	}
	{
		struct img *img;
		bool list = strcmp(action, "list") == 0;

		if (tool_open(&img, s.file, format, IMG_OPEN_RDONLY) < 0)
			return TOOL_EXIT_FAILURE;
		if (img_has_internal_snapshots(img) && !list) {
			img_close(img);
			if (tool_open(&img, s.file, format, IMG_OPEN_RDWR) < 0)
				return TOOL_EXIT_FAILURE;
		}
		if (img_has_internal_snapshots(img)) {
			ret = snapshot_internal(img, action, name);
			if (img_close(img) < 0 && ret == 0)
				ret = -EIO;
			if (ret == 0 && !quiet && !list)
				printf("Snapshot '%s' %s.\n", name,
				       !strcmp(action, "create")   ? "created"
				       : !strcmp(action, "revert") ? "restored"
								   : "deleted");
			return ret == 0 ? TOOL_EXIT_OK : TOOL_EXIT_FAILURE;
		}
		img_close(img);
	}
	if (asprintf(&s.snapdir, "%s.snapshots", s.file) < 0) {
		tool_error("out of memory");
		return TOOL_EXIT_FAILURE;
	}
	base = strrchr(s.file, '/');
	base = base ? base + 1 : s.file;
	dot = strrchr(base, '.');
	snapshot_index_load(&s);
	if (snapshot_load_chain(&s, format) < 0)
		goto out;
	snprintf(s.ext, sizeof(s.ext), "%s",
		 dot && dot != base && strlen(dot + 1) < sizeof(s.ext)
			 ? dot + 1
			 : s.layers[0].format);

	if (strcmp(action, "create") == 0)
		ret = snapshot_create(&s, name);
	else if (strcmp(action, "list") == 0)
		ret = snapshot_list(&s);
	else if (strcmp(action, "revert") == 0)
		ret = snapshot_revert(&s, name, force);
	else
		ret = snapshot_delete(&s, name);
	if (ret == 0 && !quiet && strcmp(action, "list") != 0)
		printf("Snapshot '%s' %s.\n", name,
		       !strcmp(action, "create")   ? "created"
		       : !strcmp(action, "revert") ? "restored"
						   : "deleted");
out:
	for (int i = 0; s.layers && i < s.nlayers; i++) {
		for (int j = 0; j < s.layers[i].nfiles; j++)
			free(s.layers[i].files[j]);
		free(s.layers[i].files);
	}
	free(s.snapdir);
	free(s.layers);
	return ret == 0 ? TOOL_EXIT_OK : TOOL_EXIT_FAILURE;
}
