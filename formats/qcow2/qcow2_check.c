/* SPDX-License-Identifier: MIT */
/*
 * qcow2 check and repair.  Every reference is counted from the tables
 * (header, refcount table and blocks, snapshot table, each L1 table with
 * its L2 tables and data clusters) and compared with the stored
 * refcounts: a stored count above the references is a leak, below is a
 * corruption (as qemu-img check classifies them).  Entries that point
 * outside the file are corruptions; repairing them clears the entry.
 * COPIED flags of the active tables must match a refcount of one.
 */
#include "qcow2_priv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct check_ctx {
	struct img *img;
	struct qcow2_state *s;
	struct img_check_result *res;
	unsigned fix;
	uint64_t *want;
	uint64_t nwant;
	bool oom;
};

static void count(struct check_ctx *c, uint64_t off, uint64_t len)
{
	struct qcow2_state *s = c->s;
	uint64_t first, last;

	if (!len)
		return;
	first = off >> s->cluster_bits;
	last = (off + len - 1) >> s->cluster_bits;
	if (last >= c->nwant) {
		uint64_t n = (last + 1) * 2;
		uint64_t *w = realloc(c->want, n * sizeof(*w));

		if (!w) {
			c->oom = true;
			return;
		}
		memset(w + c->nwant, 0, (n - c->nwant) * sizeof(*w));
		c->want = w;
		c->nwant = n;
	}
	for (uint64_t i = first; i <= last; i++)
		c->want[i]++;
}

static uint64_t want_of(const struct check_ctx *c, uint64_t cluster)
{
	return cluster < c->nwant ? c->want[cluster] : 0;
}

static bool outside(const struct qcow2_state *s, uint64_t off, uint64_t len)
{
	return off % s->cluster_size || off + len > s->file_size ||
	       off + len < off;
}

static void corrupt(struct check_ctx *c, bool fixed, const char *what,
		    uint64_t index, uint64_t off)
{
	c->res->corruptions++;
	if (fixed)
		c->res->corruptions_fixed++;
	img_check_note(c->res, "%s %s %llu points outside the file (%llu)",
		       fixed ? "Repairing" : "ERROR", what,
		       (unsigned long long)index, (unsigned long long)off);
}

/* Count an L2 table's data clusters; active tables can be repaired. */
static void count_l2(struct check_ctx *c, uint64_t *t, bool active,
		     uint32_t l1i, bool *dirty, uint64_t *prev_host)
{
	struct qcow2_state *s = c->s;

	for (uint32_t j = 0; j < s->l2_entries; j++) {
		uint64_t e = t[j * s->l2_words], host, len;
		uint64_t vc = (uint64_t)l1i * s->l2_entries + j;

		if (!e)
			continue;
		if (e & QCOW2_OFLAG_COMPRESSED) {
			qcow2_compressed_range(s, e, &host, &len);
			if (host + len > s->file_size + 512 || host < 512) {
				bool fix = active &&
					   (c->fix & IMG_CHECK_FIX_ERRORS);

				corrupt(c, fix, "compressed cluster", vc, host);
				if (fix) {
					t[j * s->l2_words] = 0;
					*dirty = true;
				}
				continue;
			}
			count(c, host, len);
			if (active)
				c->res->allocated_clusters++;
			continue;
		}
		host = e & QCOW2_OFFSET_MASK;
		if (!host || s->has_ext_data) {
			if (active && s->has_ext_data &&
			    (e & ~QCOW2_OFLAG_ZERO))
				c->res->allocated_clusters++;
			continue;
		}
		if (outside(s, host, s->cluster_size)) {
			bool fix = active && (c->fix & IMG_CHECK_FIX_ERRORS);

			corrupt(c, fix, "L2 entry of cluster", vc, host);
			if (fix) {
				t[j * s->l2_words] =
					s->h.version >= 3 && s->l2_words == 1
						? QCOW2_OFLAG_ZERO
						: 0;
				if (s->l2_words == 2)
					t[j * 2 + 1] = QCOW2_SC_ZERO_ALL;
				*dirty = true;
			}
			continue;
		}
		count(c, host, s->cluster_size);
		if (active) {
			c->res->allocated_clusters++;
			if (*prev_host && host != *prev_host + s->cluster_size)
				c->res->fragmented_clusters++;
			*prev_host = host;
		}
	}
}

static int count_l1(struct check_ctx *c, uint64_t l1_off, uint32_t l1_size,
		    const uint64_t *l1_snap)
{
	struct qcow2_state *s = c->s;
	bool active = !l1_snap;
	uint64_t prev_host = 0;
	uint64_t *buf = NULL;
	int ret = 0;

	count(c, l1_off, (uint64_t)l1_size * 8);
	for (uint32_t i = 0; i < l1_size; i++) {
		uint64_t e = active ? s->l1[i] : l1_snap[i];
		uint64_t off = e & QCOW2_OFFSET_MASK;
		uint64_t *t;
		bool dirty = false;

		if (!off)
			continue;
		if (outside(s, off, s->cluster_size) || off < s->cluster_size) {
			bool fix = active && (c->fix & IMG_CHECK_FIX_ERRORS);

			corrupt(c, fix, "L1 entry", i, off);
			if (fix) {
				s->l1[i] = 0;
				free(s->l2[i]);
				s->l2[i] = NULL;
				s->l1_dirty = true;
			}
			continue;
		}
		count(c, off, s->cluster_size);
		if (active) {
			ret = qcow2_l2_load(c->img, s, i, &t);
			if (ret < 0)
				break;
		} else {
			if (!buf) {
				buf = malloc(s->cluster_size);
				if (!buf) {
					ret = -ENOMEM;
					break;
				}
			}
			ret = img_file_pread(&s->file, buf, s->cluster_size,
					     off);
			if (ret < 0) {
				c->res->check_errors++;
				ret = 0;
				continue;
			}
			for (uint32_t j = 0; j < s->cluster_size / 8; j++)
				buf[j] = IMG_BE64(buf[j]);
			t = buf;
		}
		/* Fragmentation counts within one L2 table, as QEMU does. */
		prev_host = 0;
		count_l2(c, t, active, i, &dirty, &prev_host);
		if (dirty)
			s->l2_dirty[i] = 1;
	}
	free(buf);
	return ret;
}

static void fix_copied(struct check_ctx *c)
{
	struct qcow2_state *s = c->s;
	bool fix = c->fix & IMG_CHECK_FIX_ERRORS;

	for (uint32_t i = 0; i < s->h.l1_size; i++) {
		uint64_t e = s->l1[i], off = e & QCOW2_OFFSET_MASK;
		uint64_t *t = s->l2[i];
		bool want_copied;

		if (!off || !t)
			continue;
		want_copied = want_of(c, off >> s->cluster_bits) == 1;
		if (want_copied != !!(e & QCOW2_OFLAG_COPIED)) {
			c->res->corruptions++;
			img_check_note(
				c->res,
				"%s OFLAG_COPIED L2 cluster: l1_index=%u "
				"l1_entry=%llx refcount=%llu",
				fix ? "Repairing" : "ERROR", i,
				(unsigned long long)e,
				(unsigned long long)want_of(
					c, off >> s->cluster_bits));
			if (fix) {
				s->l1[i] ^= QCOW2_OFLAG_COPIED;
				s->l1_dirty = true;
				c->res->corruptions_fixed++;
			}
		}
		for (uint32_t j = 0; j < s->l2_entries; j++) {
			uint64_t d = t[j * s->l2_words];
			uint64_t host = d & QCOW2_OFFSET_MASK;

			if ((d & QCOW2_OFLAG_COMPRESSED) || !host ||
			    s->has_ext_data)
				continue;
			want_copied = want_of(c, host >> s->cluster_bits) == 1;
			if (want_copied == !!(d & QCOW2_OFLAG_COPIED))
				continue;
			c->res->corruptions++;
			img_check_note(c->res,
				       "%s OFLAG_COPIED data cluster: "
				       "l2_entry=%llx refcount=%llu",
				       fix ? "Repairing" : "ERROR",
				       (unsigned long long)d,
				       (unsigned long long)want_of(
					       c, host >> s->cluster_bits));
			if (fix) {
				t[j * s->l2_words] ^= QCOW2_OFLAG_COPIED;
				s->l2_dirty[i] = 1;
				c->res->corruptions_fixed++;
			}
		}
	}
}

/* Persistent dirty bitmaps (valid while the autoclear bit is set): the
 * directory, each bitmap table and the data clusters it names. */
static void count_bitmaps(struct check_ctx *c)
{
	struct qcow2_state *s = c->s;
	const uint8_t *e = s->other_exts;
	uint64_t dir_off = 0, dir_size = 0, pos = 0;
	uint32_t nb = 0;
	uint8_t *dir = NULL;
	uint64_t *table = NULL;

	if (!(s->h.autoclear_features & QCOW2_AUTOCLEAR_BITMAPS))
		return;
	while (pos + 8 <= s->other_exts_len) {
		uint32_t type, len;

		memcpy(&type, e + pos, 4);
		memcpy(&len, e + pos + 4, 4);
		type = IMG_BE32(type);
		len = IMG_BE32(len);
		if (type == QCOW2_EXT_BITMAPS && len >= 24 &&
		    pos + 8 + 24 <= s->other_exts_len) {
			memcpy(&nb, e + pos + 8, 4);
			memcpy(&dir_size, e + pos + 16, 8);
			memcpy(&dir_off, e + pos + 24, 8);
			nb = IMG_BE32(nb);
			dir_size = IMG_BE64(dir_size);
			dir_off = IMG_BE64(dir_off);
			break;
		}
		pos += 8 + (((uint64_t)len + 7) & ~(uint64_t)7);
	}
	if (!nb || !dir_size)
		return;
	if (dir_size > (64u << 20) || outside(s, dir_off, 0) ||
	    dir_off + dir_size > s->file_size) {
		c->res->check_errors++;
		img_check_note(c->res,
			       "bitmap directory lies outside the file");
		return;
	}
	count(c, dir_off, dir_size);
	dir = malloc(dir_size);
	if (!dir || img_file_pread(&s->file, dir, dir_size, dir_off) < 0) {
		c->res->check_errors++;
		free(dir);
		return;
	}
	pos = 0;
	for (uint32_t i = 0; i < nb && pos + 24 <= dir_size; i++) {
		uint64_t toff;
		uint32_t tsize, extra;
		uint16_t nl;

		memcpy(&toff, dir + pos, 8);
		memcpy(&tsize, dir + pos + 8, 4);
		memcpy(&nl, dir + pos + 18, 2);
		memcpy(&extra, dir + pos + 20, 4);
		toff = IMG_BE64(toff);
		tsize = IMG_BE32(tsize);
		nl = IMG_BE16(nl);
		extra = IMG_BE32(extra);
		pos += (24 + (uint64_t)extra + nl + 7) & ~(uint64_t)7;
		if (!tsize)
			continue;
		if ((uint64_t)tsize * 8 > (64u << 20) || outside(s, toff, 0) ||
		    toff + (uint64_t)tsize * 8 > s->file_size) {
			c->res->check_errors++;
			img_check_note(c->res,
				       "bitmap table %u lies outside the file",
				       i);
			continue;
		}
		count(c, toff, (uint64_t)tsize * 8);
		table = realloc(table, (size_t)tsize * 8);
		if (!table || img_file_pread(&s->file, table, (size_t)tsize * 8,
					     toff) < 0) {
			c->res->check_errors++;
			continue;
		}
		for (uint32_t j = 0; j < tsize; j++) {
			uint64_t d = IMG_BE64(table[j]) & QCOW2_OFFSET_MASK;

			if (d && !outside(s, d, s->cluster_size))
				count(c, d, s->cluster_size);
		}
	}
	free(table);
	free(dir);
}

static int count_everything(struct check_ctx *c)
{
	struct qcow2_state *s = c->s;
	int ret;

	count(c, 0, s->cluster_size);
	count(c, s->h.refcount_table_offset,
	      (uint64_t)s->h.refcount_table_clusters << s->cluster_bits);
	for (uint64_t i = 0; i < s->reftable_cap; i++) {
		uint64_t e = s->reftable[i];
		uint64_t off = e & QCOW2_REFT_OFFSET_MASK;

		if (!e)
			continue;
		if ((e & QCOW2_REFT_RESERVED) ||
		    outside(s, off, s->cluster_size)) {
			bool fix = c->fix & IMG_CHECK_FIX_ERRORS;

			corrupt(c, fix, "refcount table entry", i, off);
			if (fix) {
				s->reftable[i] = 0;
				s->reftable_dirty = true;
			}
			continue;
		}
		count(c, off, s->cluster_size);
	}
	if (s->nsnapshots)
		count(c, s->h.snapshots_offset, s->snapshots_size);
	count_bitmaps(c);
	ret = count_l1(c, s->h.l1_table_offset, s->h.l1_size, NULL);
	if (ret < 0)
		return ret;
	for (uint32_t i = 0; i < s->nsnapshots; i++) {
		const struct qcow2_snapshot *sn = &s->snapshots[i];
		uint64_t *l1 = calloc(sn->l1_size ? sn->l1_size : 1, 8);

		if (!l1)
			return -ENOMEM;
		ret = img_file_pread(&s->file, l1, (size_t)sn->l1_size * 8,
				     sn->l1_table_offset);
		if (ret < 0) {
			free(l1);
			c->res->check_errors++;
			continue;
		}
		for (uint32_t j = 0; j < sn->l1_size; j++)
			l1[j] = IMG_BE64(l1[j]);
		ret = count_l1(c, sn->l1_table_offset, sn->l1_size, l1);
		free(l1);
		if (ret < 0)
			return ret;
	}
	return c->oom ? -ENOMEM : 0;
}

static int compare_refcounts(struct check_ctx *c)
{
	struct qcow2_state *s = c->s;
	uint64_t n = c->nwant > s->nrefs ? c->nwant : s->nrefs;
	uint64_t end = 0;
	int ret;

	for (uint64_t i = 0; i < n; i++) {
		uint64_t have = qcow2_ref_get(s, i), want = want_of(c, i);
		bool leak = have > want, fix;

		if (want)
			end = i + 1;
		if (have == want)
			continue;
		fix = leak ? (c->fix & IMG_CHECK_FIX_LEAKS)
			   : (c->fix & IMG_CHECK_FIX_ERRORS);
		if (want > s->refcount_max) {
			c->res->corruptions++;
			img_check_note(
				c->res,
				"ERROR cluster %llu has %llu references, "
				"more than a refcount can hold",
				(unsigned long long)i,
				(unsigned long long)want);
			continue;
		}
		img_check_note(c->res,
			       "%s cluster %llu refcount=%llu reference=%llu",
			       fix    ? "Repairing"
			       : leak ? "Leaked"
				      : "ERROR",
			       (unsigned long long)i, (unsigned long long)have,
			       (unsigned long long)want);
		if (leak)
			c->res->leaks++;
		else
			c->res->corruptions++;
		if (!fix)
			continue;
		ret = qcow2_ref_set(c->img, s, i, want);
		if (ret < 0)
			return ret;
		if (leak)
			c->res->leaks_fixed++;
		else
			c->res->corruptions_fixed++;
	}
	c->res->image_end_offset = end << s->cluster_bits;
	if (s->refs_past_eof) {
		bool fix = c->fix & IMG_CHECK_FIX_LEAKS;

		/* The blocks that held them are flagged and rewritten
		 * from refs[] (zeros there) by the commit of a repair. */
		c->res->leaks += s->refs_past_eof;
		img_check_note(c->res,
			       "%s %llu refcounts of clusters past the end of "
			       "the file",
			       fix ? "Repairing" : "Leaked",
			       (unsigned long long)s->refs_past_eof);
		if (fix) {
			c->res->leaks_fixed += s->refs_past_eof;
			s->refs_past_eof = 0;
		}
	}
	return 0;
}

int qcow2_check(struct img *img, struct img_check_result *res, unsigned fix)
{
	struct qcow2_state *s = img_state(img);
	struct check_ctx c = { img, s, res, fix, NULL, 0, false };
	uint64_t cs = s->cluster_size;
	int ret;

	if (!s->refs_loaded) {
		ret = qcow2_refs_load(img, s);
		if (ret < 0)
			return ret;
	}
	res->total_clusters = (s->h.size + cs - 1) / cs;
	ret = count_everything(&c);
	if (ret < 0) {
		free(c.want);
		return ret == -ENOMEM ? img_error(img, ret, "out of memory")
				      : ret;
	}
	ret = compare_refcounts(&c);
	if (ret >= 0)
		fix_copied(&c);
	free(c.want);
	if (ret < 0)
		return ret;
	if (fix && s->writable) {
		bool clean = res->corruptions == res->corruptions_fixed;

		/* Refcounts first, then L2 and L1 (qcow2_commit's order). */
		ret = qcow2_commit(img, s, true);
		if (ret < 0)
			return ret;
		if (clean && (fix & IMG_CHECK_FIX_ERRORS) &&
		    (s->h.incompatible_features &
		     (QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT))) {
			s->h.incompatible_features &= ~(QCOW2_INCOMPAT_DIRTY |
							QCOW2_INCOMPAT_CORRUPT);
			ret = qcow2_header_write(img, s);
			if (ret >= 0)
				ret = qcow2_sync(img, s);
		}
	}
	return ret;
}

int qcow2_dirty_repair(struct img *img, struct qcow2_state *s)
{
	struct img_check_result *res = calloc(1, sizeof(*res));
	int ret;

	(void)s;
	if (!res)
		return img_error(img, -ENOMEM, "out of memory");
	ret = qcow2_check(img, res, IMG_CHECK_FIX_LEAKS | IMG_CHECK_FIX_ERRORS);
	if (ret >= 0 && res->corruptions != res->corruptions_fixed)
		ret = img_error(img, -EINVAL,
				"the image was not closed cleanly and its "
				"refcounts cannot be rebuilt: %s",
				res->nmessages ? res->messages[0] : "");
	free(res);
	return ret;
}
