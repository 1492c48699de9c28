/* SPDX-License-Identifier: MIT */
/* qcow2 internal snapshots: the snapshot table. */
#include "qcow2_priv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define QCOW2_MAX_SNAPSHOT_TABLE (64u << 20)

void qcow2_snapshots_free(struct qcow2_state *s)
{
	for (uint32_t i = 0; i < s->nsnapshots; i++) {
		free(s->snapshots[i].id);
		free(s->snapshots[i].name);
		free(s->snapshots[i].extra);
	}
	free(s->snapshots);
	s->snapshots = NULL;
	s->nsnapshots = 0;
}

static char *dup_bytes(const uint8_t *p, size_t n)
{
	char *r = malloc(n + 1);

	if (r) {
		memcpy(r, p, n);
		r[n] = 0;
	}
	return r;
}

int qcow2_snapshots_load(struct img *img, struct qcow2_state *s)
{
	uint64_t off = s->h.snapshots_offset;
	uint32_t n = s->h.nb_snapshots;
	int ret;

	if (!n)
		return 0;
	s->snapshots = calloc(n, sizeof(*s->snapshots));
	if (!s->snapshots)
		return img_error(img, -ENOMEM, "out of memory for %u snapshots",
				 n);
	for (uint32_t i = 0; i < n; i++) {
		struct qcow2_snapshot *sn = &s->snapshots[i];
		struct qcow2_snapshot_disk d;
		uint32_t extra, idl, nl;
		uint8_t *var;

		if (off - s->h.snapshots_offset > QCOW2_MAX_SNAPSHOT_TABLE ||
		    off + sizeof(d) > s->file_size) {
			ret = img_error(img, -EINVAL,
					"snapshot table runs past the end of "
					"the file (entry %u)",
					i);
			goto fail;
		}
		ret = img_file_pread(&s->file, &d, sizeof(d), off);
		if (ret < 0)
			goto fail;
		s->nsnapshots = i + 1;
		sn->l1_table_offset = IMG_BE64(d.l1_table_offset);
		sn->l1_size = IMG_BE32(d.l1_size);
		sn->date_sec = IMG_BE32(d.date_sec);
		sn->date_nsec = IMG_BE32(d.date_nsec);
		sn->vm_clock_nsec = IMG_BE64(d.vm_clock_nsec);
		sn->vm_state_size = IMG_BE32(d.vm_state_size);
		extra = IMG_BE32(d.extra_data_size);
		idl = IMG_BE16(d.id_str_size);
		nl = IMG_BE16(d.name_size);
		if (extra > 1024 ||
		    off + sizeof(d) + extra + idl + nl > s->file_size) {
			ret = img_error(img, -EINVAL,
					"snapshot %u's entry runs past the end "
					"of the file",
					i);
			goto fail;
		}
		if (sn->l1_table_offset % s->cluster_size ||
		    (uint64_t)sn->l1_size * 8 > QCOW2_MAX_L1_BYTES ||
		    sn->l1_table_offset + (uint64_t)sn->l1_size * 8 >
			    s->file_size) {
			ret = img_error(img, -EINVAL,
					"snapshot %u's L1 table lies outside "
					"the file",
					i);
			goto fail;
		}
		var = malloc((size_t)extra + idl + nl + 1);
		if (!var) {
			ret = img_error(img, -ENOMEM, "out of memory");
			goto fail;
		}
		ret = img_file_pread(&s->file, var, (size_t)extra + idl + nl,
				     off + sizeof(d));
		if (ret < 0) {
			free(var);
			goto fail;
		}
		sn->extra_size = extra;
		sn->extra = malloc(extra ? extra : 1);
		sn->id = dup_bytes(var + extra, idl);
		sn->name = dup_bytes(var + extra + idl, nl);
		if (sn->extra)
			memcpy(sn->extra, var, extra);
		sn->disk_size = s->h.size;
		if (extra >= 16) {
			uint64_t ds;

			memcpy(&ds, var + 8, 8);
			sn->disk_size = IMG_BE64(ds);
		}
		free(var);
		if (!sn->extra || !sn->id || !sn->name) {
			ret = img_error(img, -ENOMEM, "out of memory");
			goto fail;
		}
		off += (sizeof(d) + extra + idl + nl + 7) & ~(uint64_t)7;
	}
	s->snapshots_size = off - s->h.snapshots_offset;
	return 0;
fail:
	qcow2_snapshots_free(s);
	return ret;
}

/* ---- changes -------------------------------------------------------------
 * Refcounts count one reference per snapshot tree (and the active one)
 * that reaches a cluster: a snapshot adds one to each L2 table and data
 * cluster of the active tree.  Creating writes the snapshot's L1 copy and
 * the new counts before the snapshot table that names it, and the header
 * last; deleting drops the snapshot from the table (and header) first and
 * releases its clusters after; applying repoints the active L1 and only
 * then releases the old tree.  A crash leaves leaks at worst. */

static int find_snapshot(const struct qcow2_state *s, const char *name)
{
	for (uint32_t i = 0; i < s->nsnapshots; i++)
		if (!strcmp(s->snapshots[i].name, name))
			return (int)i;
	for (uint32_t i = 0; i < s->nsnapshots; i++)
		if (!strcmp(s->snapshots[i].id, name))
			return (int)i;
	return -1;
}

static int read_l1(struct img *img, struct qcow2_state *s,
		   const struct qcow2_snapshot *sn, uint64_t **out)
{
	uint64_t *l1 = calloc(sn->l1_size ? sn->l1_size : 1, 8);
	int ret;

	if (!l1)
		return img_error(img, -ENOMEM, "out of memory");
	ret = img_file_pread(&s->file, l1, (size_t)sn->l1_size * 8,
			     sn->l1_table_offset);
	if (ret < 0) {
		free(l1);
		return img_error(img, ret, "cannot read snapshot %s's L1 table",
				 sn->name);
	}
	for (uint32_t i = 0; i < sn->l1_size; i++)
		l1[i] = IMG_BE64(l1[i]);
	*out = l1;
	return 0;
}

static int ref_add(struct img *img, struct qcow2_state *s, uint64_t off,
		   uint64_t len, int delta)
{
	uint64_t a = off >> s->cluster_bits;
	uint64_t b = (off + len - 1) >> s->cluster_bits;

	for (uint64_t c = a; c <= b; c++) {
		uint64_t v = qcow2_ref_get(s, c);
		int ret;

		if (delta < 0 && !v)
			continue;
		ret = qcow2_ref_set(img, s, c, delta > 0 ? v + 1 : v - 1);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* Every L2 table and data cluster of a tree: counted up or down now
 * (delta), or released after the next commit (later). */
static int tree_walk(struct img *img, struct qcow2_state *s, const uint64_t *l1,
		     uint32_t l1_size, int delta, bool later)
{
	uint64_t *buf = malloc(s->cluster_size);
	int ret = 0;

	if (!buf)
		return img_error(img, -ENOMEM, "out of memory");
	for (uint32_t i = 0; i < l1_size && ret >= 0; i++) {
		uint64_t off = l1[i] & QCOW2_OFFSET_MASK;

		if (!off)
			continue;
		if (off % s->cluster_size ||
		    off + s->cluster_size > s->file_size) {
			ret = img_error(img, -EINVAL,
					"L1 entry %u points outside the file",
					i);
			break;
		}
		ret = img_file_pread(&s->file, buf, s->cluster_size, off);
		if (ret < 0)
			break;
		for (uint32_t j = 0; j < s->l2_entries && ret >= 0; j++) {
			uint64_t e = IMG_BE64(buf[j * s->l2_words]), host, len;

			if (e & QCOW2_OFLAG_COMPRESSED) {
				qcow2_compressed_range(s, e, &host, &len);
			} else {
				host = e & QCOW2_OFFSET_MASK;
				len = s->cluster_size;
			}
			if (!host)
				continue;
			ret = later ? qcow2_free_later(img, s, host, len)
				    : ref_add(img, s, host, len, delta);
		}
		if (ret >= 0)
			ret = later ? qcow2_free_later(img, s, off,
						       s->cluster_size)
				    : ref_add(img, s, off, s->cluster_size,
					      delta);
	}
	free(buf);
	return ret;
}

/* COPIED flags of the active tree: set exactly where the refcount is 1
 * (only tables with a refcount of 1 are written in place). */
static int fix_copied(struct img *img, struct qcow2_state *s)
{
	for (uint32_t i = 0; i < s->h.l1_size; i++) {
		uint64_t e = s->l1[i], off = e & QCOW2_OFFSET_MASK, *t;
		bool own;
		int ret;

		if (!off)
			continue;
		own = qcow2_ref_get(s, off >> s->cluster_bits) == 1;
		if (own != !!(e & QCOW2_OFLAG_COPIED)) {
			s->l1[i] = e ^ QCOW2_OFLAG_COPIED;
			s->l1_dirty = true;
		}
		if (!own)
			continue;
		ret = qcow2_l2_load(img, s, i, &t);
		if (ret < 0)
			return ret;
		for (uint32_t j = 0; j < s->l2_entries; j++) {
			uint64_t d = t[j * s->l2_words];
			uint64_t host = d & QCOW2_OFFSET_MASK;
			bool one;

			if ((d & QCOW2_OFLAG_COMPRESSED) || !host)
				continue;
			one = qcow2_ref_get(s, host >> s->cluster_bits) == 1;
			if (one != !!(d & QCOW2_OFLAG_COPIED)) {
				t[j * s->l2_words] = d ^ QCOW2_OFLAG_COPIED;
				s->l2_dirty[i] = 1;
			}
		}
	}
	return 0;
}

/* Everything the active tree reaches is shared with a new snapshot: no
 * COPIED flag may stay, or a later write would land in a shared cluster.
 * Only flags change in the (now shared) tables. */
static int clear_copied(struct img *img, struct qcow2_state *s)
{
	for (uint32_t i = 0; i < s->h.l1_size; i++) {
		uint64_t *t;
		int ret;

		if (!(s->l1[i] & QCOW2_OFFSET_MASK))
			continue;
		s->l1[i] &= ~QCOW2_OFLAG_COPIED;
		s->l1_dirty = true;
		ret = qcow2_l2_load(img, s, i, &t);
		if (ret < 0)
			return ret;
		for (uint32_t j = 0; j < s->l2_entries; j++) {
			if (t[j * s->l2_words] & QCOW2_OFLAG_COPIED) {
				t[j * s->l2_words] &= ~QCOW2_OFLAG_COPIED;
				s->l2_dirty[i] = 1;
			}
		}
	}
	return 0;
}

/* Write the table (entries list) into fresh clusters. */
static int table_write(struct img *img, struct qcow2_state *s,
		       const struct qcow2_snapshot *list, uint32_t n,
		       uint64_t *off, uint64_t *size)
{
	uint64_t bytes = 0, pos = 0, first;
	uint8_t *buf;
	int ret;

	*off = 0;
	*size = 0;
	for (uint32_t i = 0; i < n; i++) {
		uint32_t extra = list[i].extra_size < 16 ? 16
							 : list[i].extra_size;

		bytes += (sizeof(struct qcow2_snapshot_disk) + extra +
			  strlen(list[i].id) + strlen(list[i].name) + 7) &
			 ~(uint64_t)7;
	}
	if (!n)
		return 0;
	buf = calloc(1, bytes);
	if (!buf)
		return img_error(img, -ENOMEM, "out of memory");
	for (uint32_t i = 0; i < n; i++) {
		const struct qcow2_snapshot *sn = &list[i];
		uint32_t extra = sn->extra_size < 16 ? 16 : sn->extra_size;
		size_t idl = strlen(sn->id), nl = strlen(sn->name);
		struct qcow2_snapshot_disk d = {
			.l1_table_offset = IMG_BE64(sn->l1_table_offset),
			.l1_size = IMG_BE32(sn->l1_size),
			.id_str_size = IMG_BE16((uint16_t)idl),
			.name_size = IMG_BE16((uint16_t)nl),
			.date_sec = IMG_BE32(sn->date_sec),
			.date_nsec = IMG_BE32(sn->date_nsec),
			.vm_clock_nsec = IMG_BE64(sn->vm_clock_nsec),
			.vm_state_size = IMG_BE32(sn->vm_state_size),
			.extra_data_size = IMG_BE32(extra),
		};
		uint8_t *p = buf + pos;
		uint64_t ds = IMG_BE64(sn->disk_size);

		memcpy(p, &d, sizeof(d));
		if (sn->extra_size)
			memcpy(p + sizeof(d), sn->extra, sn->extra_size);
		memcpy(p + sizeof(d) + 8, &ds, 8);
		memcpy(p + sizeof(d) + extra, sn->id, idl);
		memcpy(p + sizeof(d) + extra + idl, sn->name, nl);
		pos += (sizeof(d) + extra + idl + nl + 7) & ~(uint64_t)7;
	}
	ret = qcow2_alloc_clusters(
		img, s, (bytes + s->cluster_size - 1) >> s->cluster_bits,
		&first);
	if (ret >= 0)
		ret = img_file_pwrite(&s->file, buf, bytes,
				      first << s->cluster_bits);
	free(buf);
	if (ret < 0)
		return img_error(img, ret, "cannot write the snapshot table");
	s->data_unsynced = true;
	*off = first << s->cluster_bits;
	*size = bytes;
	return 0;
}

/* Switch the header to a new table (already written) and release the
 * old one afterwards. */
static int table_switch(struct img *img, struct qcow2_state *s, uint32_t n,
			uint64_t off, uint64_t size)
{
	uint64_t old_off = s->h.snapshots_offset, old_size = s->snapshots_size;
	uint32_t old_n = s->h.nb_snapshots;
	int ret = qcow2_commit(img, s, true);

	if (ret < 0)
		return ret;
	s->h.nb_snapshots = n;
	s->h.snapshots_offset = off;
	ret = qcow2_header_write(img, s);
	if (ret >= 0)
		ret = qcow2_sync(img, s);
	if (ret < 0) {
		s->h.nb_snapshots = old_n;
		s->h.snapshots_offset = old_off;
		return ret;
	}
	s->snapshots_size = size;
	if (old_n && old_size)
		ret = qcow2_free_later(img, s, old_off, old_size);
	return ret;
}

int qcow2_snapshot_list(struct img *img, struct img_snapshot **list, int *count)
{
	struct qcow2_state *s = img_state(img);
	struct img_snapshot *l =
		calloc(s->nsnapshots ? s->nsnapshots : 1, sizeof(*l));

	if (!l)
		return img_error(img, -ENOMEM, "out of memory");
	for (uint32_t i = 0; i < s->nsnapshots; i++) {
		const struct qcow2_snapshot *sn = &s->snapshots[i];

		snprintf(l[i].id, sizeof(l[i].id), "%s", sn->id);
		snprintf(l[i].name, sizeof(l[i].name), "%s", sn->name);
		l[i].date_sec = sn->date_sec;
		l[i].date_nsec = sn->date_nsec;
		l[i].vm_clock_nsec = sn->vm_clock_nsec;
		l[i].vm_state_size = sn->vm_state_size;
		l[i].disk_size = sn->disk_size;
	}
	*list = l;
	*count = (int)s->nsnapshots;
	return 0;
}

static int check_changeable(struct img *img, struct qcow2_state *s)
{
	if (s->has_ext_data)
		return img_error(img, -ENOTSUP,
				 "images with an external data file cannot "
				 "have internal snapshots");
	if (!s->refs_loaded)
		return img_error(img, -EROFS, "the image is read-only");
	return qcow2_commit(img, s, true);
}

int qcow2_snapshot_create(struct img *img, const char *name)
{
	struct qcow2_state *s = img_state(img);
	uint64_t l1_bytes = (uint64_t)s->h.l1_size * 8, first, off, size;
	struct qcow2_snapshot *list, *sn;
	unsigned long next_id = 1;
	struct timespec now;
	uint64_t *l1 = NULL;
	int ret = check_changeable(img, s);

	if (ret < 0)
		return ret;
	if (!*name || strlen(name) > 255)
		return img_error(img, -EINVAL, "invalid snapshot name");
	if (find_snapshot(s, name) >= 0)
		return img_error(img, -EEXIST, "snapshot '%s' already exists",
				 name);
	if (s->nsnapshots >= QCOW2_MAX_SNAPSHOTS)
		return img_error(img, -ENOSPC, "too many snapshots");
	for (uint32_t i = 0; i < s->nsnapshots; i++) {
		unsigned long id = strtoul(s->snapshots[i].id, NULL, 10);

		if (id >= next_id)
			next_id = id + 1;
	}
	/* The snapshot's own copy of the L1 table. */
	l1 = malloc(l1_bytes ? l1_bytes : 8);
	if (!l1)
		return img_error(img, -ENOMEM, "out of memory");
	for (uint32_t i = 0; i < s->h.l1_size; i++)
		l1[i] = IMG_BE64(s->l1[i]);
	ret = qcow2_alloc_clusters(
		img, s,
		l1_bytes ? (l1_bytes + s->cluster_size - 1) >> s->cluster_bits
			 : 1,
		&first);
	if (ret >= 0 && l1_bytes)
		ret = img_file_pwrite(&s->file, l1, l1_bytes,
				      first << s->cluster_bits);
	free(l1);
	if (ret < 0)
		return img_error(img, ret,
				 "cannot write the snapshot's L1 table");
	s->data_unsynced = true;
	ret = tree_walk(img, s, s->l1, s->h.l1_size, +1, false);
	if (ret >= 0)
		ret = clear_copied(img, s);
	if (ret < 0)
		return ret;
	list = realloc(s->snapshots, (s->nsnapshots + 1) * sizeof(*list));
	if (!list)
		return img_error(img, -ENOMEM, "out of memory");
	s->snapshots = list;
	sn = &list[s->nsnapshots];
	memset(sn, 0, sizeof(*sn));
	clock_gettime(CLOCK_REALTIME, &now);
	sn->l1_table_offset = first << s->cluster_bits;
	sn->l1_size = s->h.l1_size;
	sn->date_sec = (uint32_t)now.tv_sec;
	sn->date_nsec = (uint32_t)now.tv_nsec;
	sn->disk_size = s->h.size;
	sn->extra_size = 16;
	sn->extra = calloc(1, 16);
	sn->name = strdup(name);
	sn->id = malloc(24);
	if (!sn->extra || !sn->name || !sn->id) {
		free(sn->extra);
		free(sn->name);
		free(sn->id);
		return img_error(img, -ENOMEM, "out of memory");
	}
	snprintf(sn->id, 24, "%lu", next_id);
	ret = table_write(img, s, list, s->nsnapshots + 1, &off, &size);
	if (ret >= 0)
		ret = table_switch(img, s, s->nsnapshots + 1, off, size);
	if (ret < 0) {
		free(sn->extra);
		free(sn->name);
		free(sn->id);
		return ret;
	}
	s->nsnapshots++;
	return qcow2_commit(img, s, true);
}

static void l2_cache_drop(struct qcow2_state *s)
{
	for (uint32_t i = 0; i < s->h.l1_size; i++) {
		free(s->l2[i]);
		s->l2[i] = NULL;
		s->l2_dirty[i] = 0;
	}
}

int qcow2_snapshot_apply(struct img *img, const char *name)
{
	struct qcow2_state *s = img_state(img);
	const struct qcow2_snapshot *sn;
	uint64_t *l1;
	int idx, ret = check_changeable(img, s);

	if (ret < 0)
		return ret;
	idx = find_snapshot(s, name);
	if (idx < 0)
		return img_error(img, -ENOENT, "no snapshot '%s'", name);
	sn = &s->snapshots[idx];
	if (sn->l1_size > s->h.l1_size)
		return img_error(img, -ENOTSUP,
				 "snapshot '%s' has a larger L1 table than the "
				 "image",
				 name);
	ret = read_l1(img, s, sn, &l1);
	if (ret < 0)
		return ret;
	/* The snapshot's tree gains the active reference; the old active
	 * tree loses it once the new L1 table is on disk. */
	ret = tree_walk(img, s, l1, sn->l1_size, +1, false);
	if (ret >= 0) {
		uint64_t *old = malloc((size_t)s->h.l1_size * 8 + 8);

		if (!old)
			ret = img_error(img, -ENOMEM, "out of memory");
		else {
			memcpy(old, s->l1, (size_t)s->h.l1_size * 8);
			ret = tree_walk(img, s, old, s->h.l1_size, -1, true);
			free(old);
		}
	}
	if (ret < 0) {
		free(l1);
		return ret;
	}
	l2_cache_drop(s);
	memset(s->l1, 0, (size_t)s->h.l1_size * 8);
	for (uint32_t i = 0; i < sn->l1_size; i++)
		s->l1[i] = l1[i] & ~QCOW2_OFLAG_COPIED;
	free(l1);
	s->l1_dirty = true;
	if (sn->disk_size != s->h.size) {
		s->h.size = sn->disk_size;
		s->header_dirty = true;
		img_set_size(img, sn->disk_size);
	}
	ret = qcow2_commit(img, s, true);
	if (ret >= 0)
		ret = fix_copied(img, s);
	if (ret >= 0)
		ret = qcow2_commit(img, s, true);
	return ret;
}

int qcow2_snapshot_delete(struct img *img, const char *name)
{
	struct qcow2_state *s = img_state(img);
	struct qcow2_snapshot *list = NULL, gone;
	uint64_t *l1, off, size;
	uint32_t n = 0;
	int idx, ret = check_changeable(img, s);

	if (ret < 0)
		return ret;
	idx = find_snapshot(s, name);
	if (idx < 0)
		return img_error(img, -ENOENT, "no snapshot '%s'", name);
	ret = read_l1(img, s, &s->snapshots[idx], &l1);
	if (ret < 0)
		return ret;
	list = calloc(s->nsnapshots, sizeof(*list));
	if (!list) {
		free(l1);
		return img_error(img, -ENOMEM, "out of memory");
	}
	for (uint32_t i = 0; i < s->nsnapshots; i++)
		if ((int)i != idx)
			list[n++] = s->snapshots[i];
	ret = table_write(img, s, list, n, &off, &size);
	if (ret >= 0)
		ret = table_switch(img, s, n, off, size);
	if (ret < 0) {
		free(list);
		free(l1);
		return ret;
	}
	gone = s->snapshots[idx];
	free(s->snapshots);
	s->snapshots = list;
	s->nsnapshots = n;
	/* Nothing on disk names the snapshot now: release its tree. */
	ret = qcow2_commit(img, s, true);
	if (ret >= 0)
		ret = tree_walk(img, s, l1, gone.l1_size, -1, false);
	if (ret >= 0 && gone.l1_size)
		ret = ref_add(img, s, gone.l1_table_offset,
			      (uint64_t)gone.l1_size * 8, -1);
	free(l1);
	free(gone.id);
	free(gone.name);
	free(gone.extra);
	if (ret >= 0)
		ret = qcow2_commit(img, s, true);
	/* Clusters only the active tree has now: COPIED again. */
	if (ret >= 0)
		ret = fix_copied(img, s);
	if (ret >= 0)
		ret = qcow2_commit(img, s, true);
	return ret;
}

int qcow2_snapshot_load(struct img *img, const char *name)
{
	struct qcow2_state *s = img_state(img);
	const struct qcow2_snapshot *sn;
	uint64_t *l1, **l2;
	uint8_t *dirty;
	int idx = find_snapshot(s, name), ret;

	if (idx < 0)
		return img_error(img, -ENOENT, "no snapshot '%s'", name);
	sn = &s->snapshots[idx];
	ret = read_l1(img, s, sn, &l1);
	if (ret < 0)
		return ret;
	l2 = calloc(sn->l1_size ? sn->l1_size : 1, sizeof(*l2));
	dirty = calloc(sn->l1_size ? sn->l1_size : 1, 1);
	if (!l2 || !dirty) {
		free(l1);
		free(l2);
		free(dirty);
		return img_error(img, -ENOMEM, "out of memory");
	}
	l2_cache_drop(s);
	free(s->l1);
	free(s->l2);
	free(s->l2_dirty);
	s->l1 = l1;
	s->l2 = l2;
	s->l2_dirty = dirty;
	s->h.l1_size = sn->l1_size;
	s->h.size = sn->disk_size;
	img_set_size(img, sn->disk_size);
	return 0;
}
