/* SPDX-License-Identifier: MIT */
/* qcow2 internal snapshots: the snapshot table. */
#include "qcow2_priv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
