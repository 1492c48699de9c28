/* SPDX-License-Identifier: MIT */
/*
 * Snapshots as layers in DISK.snapshots/ (see snapshot.c): create,
 * revert and delete, each between a pending marker's writing and its
 * removal, and the recovery that finishes or undoes one a crash
 * interrupted.
 */
#include "snapshot_folder.h"

#include "backend.h"

#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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
	r = snap_dir_change_hook();
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
	snap_sync_dir(-1);
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

	if (asprintf(&out, "%s/%s", s->dir, snap_base_name(f)) < 0)
		return NULL;
	return out;
}

static void unlink_extent_targets(struct img_snapshots *s,
				  const struct snapshot_layer *top, int n)
{
	for (int i = 0; i < n; i++) {
		char *target = extent_target(s, top->files[i]);

		if (target && snap_same_file(target, top->files[i]))
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
		else if (!snap_same_dir(top->files[i], s->path))
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

static bool snap_opens_quietly(const char *path)
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
		const char *base = snap_base_name(l->path);
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
		else if (!snap_same_dir(l->path, s->path))
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

int snap_layers_create(struct img_snapshots *s, const char *tag)
{
	struct snapshot_layer *top, *parent, layer;
	bool new_ref = false, linked = false;
	struct stat st;
	char *path;
	int r;

	r = snap_layers_load(s, 0);
	if (r < 0)
		return r;
	top = &s->layers[0];
	parent = s->nlayers > 1 ? &s->layers[1] : NULL;
	path = snap_layer_path(s, tag);
	if (!path)
		return snap_fail(s, -ENOMEM, "out of memory");
	if (lstat(path, &st) == 0 || snap_layer_find(s, tag) >= 0) {
		r = snap_fail(s, -EEXIST, "%s: snapshot '%s' already exists",
			      s->path, tag);
		goto out;
	}
	r = snap_pending_begin(s, PENDING_CREATE, tag);
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
	if (parent && !top->backing_recorded[0] && !snap_opens_quietly(path)) {
		r = link_ancestors(s);
		if (r < 0)
			goto undo;
	}
	/* A parent recorded by a relative path must be found from the
	 * folder too: record it by its absolute path, which holds from
	 * both places, until the disk has been replaced. */
	if (parent && top->backing_recorded[0] &&
	    top->backing_recorded[0] != '/' && !snap_opens_quietly(path)) {
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
	r = snap_index_add(s, tag);
	if (r == 0)
		r = snap_index_save(s);
	if (r == 0)
		r = replace_disk(s, &layer);
	if (r < 0) {
		snap_index_remove(s, tag);
		snap_index_save(s);
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
	snap_pending_end(s);
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
	snap_pending_end(s);
out:
	free(path);
	return r;
}

/* ---- revert and delete ----------------------------------------------------*/

int snap_layers_revert(struct img_snapshots *s, const char *tag, unsigned flags)
{
	int idx, r;

	r = snap_layers_load(s, 0);
	if (r < 0)
		return r;
	idx = snap_layer_find(s, tag);
	if (idx < 0)
		return snap_fail(s, -ENOENT, "%s: no snapshot named '%s'",
				 s->path, tag);
	if (idx > 1 && !(flags & IMG_SNAPSHOT_REVERT_DISCARD_NEWER))
		return snap_fail(
			s, -ENOTEMPTY,
			"%s: snapshot '%s' is newer than '%s'; reverting would discard it too",
			s->path, s->layers[1].name, tag);
	r = snap_pending_begin(s, PENDING_REVERT, tag);
	if (r < 0)
		return r;
	r = replace_disk(s, &s->layers[idx]);
	if (r < 0) {
		snap_pending_end(s);
		return r;
	}
	/* Newer snapshots are no longer part of the disk's history. */
	for (int i = 1; i < idx; i++) {
		if (!s->layers[i].name[0])
			continue;
		layer_remove_files(&s->layers[i]);
		snap_index_remove(s, s->layers[i].name);
	}
	snap_index_save(s);
	snap_pending_end(s);
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

int snap_layers_delete(struct img_snapshots *s, const char *tag)
{
	int idx, r;

	r = snap_layers_load(s, 0);
	if (r < 0)
		return r;
	idx = snap_layer_find(s, tag);
	if (idx < 0)
		return snap_fail(s, -ENOENT, "%s: no snapshot named '%s'",
				 s->path, tag);
	r = snap_pending_begin(s, PENDING_DELETE, tag);
	if (r < 0)
		return r;
	r = layers_unlink_from_chain(s, idx);
	if (r < 0) {
		/* The chain still reads the same: the copy only filled the
		 * child where it fell through to the layer.  The marker
		 * stays when a link may be out of date (recovery renews). */
		if (!snap_opens_quietly(s->path))
			return r;
		snap_pending_end(s);
		return r;
	}
	layer_remove_files(&s->layers[idx]);
	snap_index_remove(s, tag);
	snap_index_save(s);
	snap_pending_end(s);
	return 0;
}

/* ---- recovery -----------------------------------------------------------*/

/* The interrupted create had not replaced the disk yet (the disk and the
 * layer are still one file): take the layer's names away again. */
static int recover_undo_create(struct img_snapshots *s, const char *tag,
			       const char *layer_path)
{
	int r = snap_layers_load(s, 0);

	if (r < 0)
		return r;
	unlink_extent_targets(s, &s->layers[0], s->layers[0].nfiles);
	if (HOOKED(unlink(layer_path)) < 0 && errno != ENOENT)
		return snap_fail(s, -errno, "%s: %s", layer_path,
				 strerror(errno));
	snap_index_remove(s, tag);
	return snap_index_save(s);
}

/* The disk replaced, the extents of its old self still have second
 * names next to it: remove those. */
static void recover_finish_create(struct img_snapshots *s, const char *tag)
{
	int idx = snap_layer_find(s, tag);

	if (idx < 0)
		return;
	for (int i = 0; i < s->layers[idx].nfiles; i++) {
		const char *f = s->layers[idx].files[i];
		char *old = NULL;

		if (asprintf(&old, "%s/%s", dirname(strdupa(s->path)),
			     snap_base_name(f)) < 0)
			continue;
		if (!snap_same_dir(f, s->path) && snap_same_file(old, f))
			HOOKED(unlink(old));
		free(old);
	}
	if (!snap_index_find(s, tag))
		snap_index_add(s, tag);
}

/* The chain does not open (a delete stopped after a child changed and
 * before its own child recorded it anew): record every link of the
 * disk's own layers again, as it is recorded. */
static int recover_relink(struct img_snapshots *s)
{
	int r = snap_layers_load(s, IMG_OPEN_FORCE);

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

		if (snap_layer_find(s, name) >= 0) {
			i++;
			continue;
		}
		path = snap_layer_path(s, name);
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
						if (!snap_same_file(
							    info->files[j],
							    path))
							HOOKED(unlink(
								info->files[j]));
				img_info_free(info);
				img_close(l);
			}
			HOOKED(unlink(path));
		}
		free(path);
		snap_index_remove(s, name);
		changed = true;
	}
	return changed ? snap_index_save(s) : 0;
}

int snap_recover(struct img_snapshots *s, int op, const char *tag)
{
	char *tmp = NULL, *layer_path = NULL;
	int r = 0;

	if (asprintf(&tmp, "%s.snapshot-tmp", s->path) < 0)
		return snap_fail(s, -ENOMEM, "out of memory");
	HOOKED(unlink(tmp));
	free(tmp);
	if ((int)op >= 0 && img_snapshot_tag_valid(tag)) {
		layer_path = snap_layer_path(s, tag);
		if (!layer_path)
			return snap_fail(s, -ENOMEM, "out of memory");
	}
	if (op == PENDING_CREATE && layer_path &&
	    snap_same_file(layer_path, s->path)) {
		r = recover_undo_create(s, tag, layer_path);
		goto out;
	}
	if (!snap_opens_quietly(s->path)) {
		r = recover_relink(s);
		if (r < 0)
			goto out;
	}
	r = snap_layers_load(s, 0);
	if (r < 0)
		goto out;
	if (op == PENDING_CREATE && layer_path)
		recover_finish_create(s, tag);
	if (op == PENDING_DELETE && layer_path) {
		int idx = snap_layer_find(s, tag);

		if (idx > 0) {
			r = layers_unlink_from_chain(s, idx);
			if (r < 0)
				goto out;
			layer_remove_files(&s->layers[idx]);
		}
		r = snap_layers_load(s, 0);
		if (r < 0)
			goto out;
	}
	r = recover_prune(s);
out:
	free(layer_path);
	if (r == 0)
		snap_pending_end(s);
	return r;
}
