/* SPDX-License-Identifier: MIT */
/* qcow2 driver internals shared between its files. */
#ifndef FORMATS_QCOW2_PRIV_H
#define FORMATS_QCOW2_PRIV_H

#include "qcow2_ondisk.h"

#include <pthread.h>

/* A run of host clusters to release once the metadata that stopped
 * referencing them is on disk. */
struct qcow2_free_run {
	uint64_t first;
	uint64_t count;
};

struct qcow2_snapshot {
	uint64_t l1_table_offset;
	uint32_t l1_size;
	uint32_t date_sec, date_nsec;
	uint64_t vm_clock_nsec;
	uint32_t vm_state_size;
	uint64_t disk_size; /* from the extra data, or the image size */
	char *id;
	char *name;
	/* extra data as stored, kept to write it back */
	uint32_t extra_size;
	uint8_t *extra;
};

struct qcow2_state {
	struct img_file file;
	/* External data file (read-only support); data_file points at
	 * file when there is none. */
	struct img_file ext_data;
	struct img_file *data;
	bool has_ext_data;
	struct qcow2_header h;
	uint32_t cluster_size;
	uint32_t cluster_bits;
	/* L2 entries per table and 64-bit words per entry (2: extended). */
	uint32_t l2_entries;
	unsigned l2_words;
	uint32_t subcluster_size;
	bool writable;

	/* L1 entries, l2[] pointers and L2 entries are read without a lock
	 * by parallel requests (atomic loads); they change under meta_lock,
	 * a table pointer before the L1 entry that makes it reachable and an
	 * L2 entry only after the data it points at is written. */
	uint64_t *l1;  /* host order; h.l1_size entries */
	uint64_t **l2; /* loaded tables (host order), indexed as l1 */
	uint8_t *l2_dirty;
	bool l1_dirty;
	/* Loading and changing tables, refcounts, allocation, the pending
	 * releases, the dirty flags and commits.  Recursive: an allocation
	 * under it reads the clusters around the write (loading tables). */
	pthread_mutex_t meta_lock;
	/* Requests hold it shared for their whole run; a flush that releases
	 * clusters (which a parallel reader may still be reading from) holds
	 * it exclusively. */
	pthread_rwlock_t layout_lock;

	/* Refcounts, loaded in full when writable or checking: refs[c] for
	 * host cluster c; clusters past nrefs have refcount 0. */
	bool refs_loaded;
	uint64_t *refs;
	uint64_t nrefs, refs_cap;
	uint64_t refcount_max;
	uint64_t refblock_entries; /* refcounts per refcount block */
	uint64_t *reftable;	   /* host order */
	uint64_t reftable_cap;	   /* entries the table's clusters hold */
	uint8_t *refblock_dirty;   /* per reftable entry */
	bool reftable_dirty;
	bool reftable_moved;
	uint64_t old_reftable_offset;
	uint32_t old_reftable_clusters;
	uint64_t free_hint;	/* no free cluster below */
	uint64_t free_hint_run; /* where multi-cluster runs are sought */
	uint64_t refs_past_eof; /* non-zero counts past the end, dropped */
	struct qcow2_free_run *pending;
	size_t npending, pending_cap;
	bool l1_moved;
	uint64_t old_l1_offset;
	uint32_t old_l1_size;
	bool header_dirty;
	bool data_unsynced;
	bool sync_failed;
	uint64_t file_size;

	char backing_name[QCOW2_MAX_BACKING_NAME + 1];
	char backing_format[64];
	char data_file_name[1024];
	/* Feature-name table as stored (48-byte entries). */
	uint8_t *feature_table;
	uint32_t feature_table_len;
	/* Header extensions we do not interpret, kept on rewrite. */
	uint8_t *other_exts;
	uint32_t other_exts_len;

	uint32_t nsnapshots;
	struct qcow2_snapshot *snapshots;
	uint64_t snapshots_size; /* bytes of the snapshot table */

	uint8_t *zero_cluster; /* cluster_size zero bytes */

	/* IMG_OPEN_COMPRESS: fresh whole clusters are stored deflated,
	 * packed from cpos (512-aligned) up to cend; clast is the last host
	 * cluster counted for a compressed cluster (refcount = number of
	 * compressed clusters in it). */
	bool compress;
	uint64_t cpos, cend, clast;
	/* The cluster being gathered from partial writes (UINT64_MAX:
	 * none), and its contents. */
	uint64_t pend_vc;
	uint8_t *pend_buf;
	int compress_threads;
};

/* qcow2_refcount.c */
int qcow2_refs_load(struct img *img, struct qcow2_state *s);
void qcow2_refs_free(struct qcow2_state *s);
uint64_t qcow2_ref_get(const struct qcow2_state *s, uint64_t cluster);
int qcow2_ref_set(struct img *img, struct qcow2_state *s, uint64_t cluster,
		  uint64_t value);
/* n contiguous free clusters, refcount set to 1; returns the first. */
int qcow2_alloc_clusters(struct img *img, struct qcow2_state *s, uint64_t n,
			 uint64_t *first);
/* Release host bytes [off, off+len) once the next commit has written
 * the metadata that no longer references them. */
int qcow2_free_later(struct img *img, struct qcow2_state *s, uint64_t off,
		     uint64_t len);
/* Write refcount blocks and table (placing new blocks as needed). */
int qcow2_refs_commit(struct img *img, struct qcow2_state *s);
/* Apply the pending releases and write their refcount blocks. */
int qcow2_refs_apply_pending(struct img *img, struct qcow2_state *s);
bool qcow2_refs_dirty(const struct qcow2_state *s);

/* qcow2.c */
int qcow2_sync(struct img *img, struct qcow2_state *s);
int qcow2_header_write(struct img *img, struct qcow2_state *s);
int qcow2_header_build(struct qcow2_state *s, uint8_t *buf, size_t *len);
void qcow2_feature_table_default(struct qcow2_state *s);
/* Rebuild refcounts after an unclean close with lazy refcounts. */
int qcow2_dirty_repair(struct img *img, struct qcow2_state *s);
int qcow2_commit(struct img *img, struct qcow2_state *s, bool sync);
int qcow2_l2_load(struct img *img, struct qcow2_state *s, uint32_t l1i,
		  uint64_t **out);
/* Host bytes a compressed L2 entry covers. */
void qcow2_compressed_range(const struct qcow2_state *s, uint64_t entry,
			    uint64_t *off, uint64_t *len);

int qcow2_l2_for_write(struct img *img, struct qcow2_state *s, uint32_t l1i,
		       uint64_t **out);
int qcow2_entry_release(struct img *img, struct qcow2_state *s, uint64_t e);
int qcow2_write_plain(struct img *img, uint64_t off, const struct iovec *iov,
		      int iovcnt, size_t len);
int qcow2_compress_pending_store(struct img *img, struct qcow2_state *s);
void qcow2_compress_pending_overlay(struct qcow2_state *s, uint64_t off,
				    const struct iovec *iov, int iovcnt,
				    size_t len);
int qcow2_write_compressed(struct img *img, struct qcow2_state *s, uint64_t off,
			   const struct iovec *iov, int iovcnt, size_t len);

/* qcow2_create.c */
int qcow2_create(const struct img_create_args *a, char *errbuf, size_t errlen);
extern const char *const qcow2_create_options[];

/* qcow2_check.c */
int qcow2_check(struct img *img, struct img_check_result *res, unsigned fix);

/* qcow2_compress.c */
int qcow2_decompress(const struct qcow2_state *s, const uint8_t *in,
		     size_t in_len, uint8_t *out, size_t out_len);
int qcow2_compress(const uint8_t *in, size_t in_len, uint8_t *out,
		   size_t out_cap, size_t *out_len);

/* qcow2_snapshot.c */
int qcow2_snapshots_load(struct img *img, struct qcow2_state *s);
void qcow2_snapshots_free(struct qcow2_state *s);
int qcow2_snapshot_list(struct img *img, struct img_snapshot **list,
			int *count);
int qcow2_snapshot_create(struct img *img, const char *name);
int qcow2_snapshot_apply(struct img *img, const char *name);
int qcow2_snapshot_delete(struct img *img, const char *name);
int qcow2_snapshot_load(struct img *img, const char *name);

#endif
