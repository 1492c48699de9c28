/* SPDX-License-Identifier: MIT */
/*
 * libimg: one handle over any block image (raw, VDI, VHD, VMDK).
 *
 * Every function that can fail returns 0 (or a non-negative count) on
 * success and a negative errno on failure.  After a failure on a handle,
 * img_errmsg() gives one human-readable line naming the file and what is
 * wrong.  Functions that have no handle yet (open, create, probe) write the
 * line into a caller-supplied buffer.  The library never prints and never
 * exits.
 *
 * Handles are safe to use from several threads at once.
 */
#ifndef LIBIMG_IMG_H
#define LIBIMG_IMG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define IMG_SECTOR_SIZE 512u
#define IMG_ERRMSG_MAX 512

struct img;

/* ---- opening ---------------------------------------------------------- */

enum img_open_flags {
	IMG_OPEN_RDONLY = 0,
	IMG_OPEN_RDWR = 1u << 0,
	/* Experts only: do not take (or respect) the image lock. */
	IMG_OPEN_NO_LOCK = 1u << 1,
	/* Do not open the backing chain; unallocated regions read as zero. */
	IMG_OPEN_NO_BACKING = 1u << 2,
	/* Open despite a recoverable inconsistency that normally refuses the
	 * open (bad VHD checksum, parent CID/UUID mismatch).  Such images
	 * are opened read-only. */
	IMG_OPEN_FORCE = 1u << 3,
	/* Caller writes strictly ascending, non-overlapping ranges exactly
	 * once (convert).  Required to write streamOptimized VMDK. */
	IMG_OPEN_SEQUENTIAL = 1u << 4,
	/* Bypass the host page cache where the file system allows it. */
	IMG_OPEN_DIRECT = 1u << 5,
	/* Open for check/repair: tolerate metadata inconsistencies that
	 * check is meant to report (the driver still validates enough to
	 * not read out of bounds). */
	IMG_OPEN_CHECK = 1u << 6,
	/* Store newly written data compressed (convert -c), for formats
	 * that keep compressed clusters (qcow2); others refuse the open. */
	IMG_OPEN_COMPRESS = 1u << 7,
};

struct img_open_options {
	const char *format;          /* NULL: probe the content */
	unsigned flags;              /* enum img_open_flags */
	const char *backing_path;    /* override the parent's location */
	const char *backing_format;  /* NULL: probe */
	const char *const *search_dirs; /* extra dirs to find parents in, NULL-terminated */
};

int img_open(struct img **out, const char *path,
	     const struct img_open_options *opts, char *errbuf, size_t errlen);
/* Flushes (when writable) and closes the whole chain; returns the flush
 * error, if any.  The handle is freed in every case. */
int img_close(struct img *img);

/* Probe the format of a file by its content: writes the driver name
 * ("raw" when nothing else matches) into fmt. */
int img_probe(const char *path, char *fmt, size_t fmtlen, char *errbuf,
	      size_t errlen);

/* The one-line message ("disk.vdi: block map entry 7 points past the end
 * of the file") of this thread's last failed call on the handle, or of
 * the handle's last failure when this thread had none; "" when there was
 * none.  Safe from any thread; the text stays valid until this thread's
 * next call into libimg. */
const char *img_errmsg(const struct img *img);

/* ---- creating --------------------------------------------------------- */

struct img_create_options {
	const char *format;          /* "raw", "vdi", "vhd"/"vpc", "vmdk" */
	uint64_t size;               /* bytes; 0 with a backing file: the parent's */
	const char *subformat;       /* NULL: the format's default */
	uint32_t cluster_size;       /* block / grain size; 0: default */
	const char *backing_file;    /* parent; relative to the new image's dir */
	const char *backing_format;  /* NULL: probe */
	/* Further "key=value,key=value" options (qemu-img -o syntax).
	 * subformat=, cluster_size=/block_size=/grain_size= may appear here too. */
	const char *options;
	unsigned flags;              /* IMG_CREATE_* */
};

enum img_create_flags {
	IMG_CREATE_EXCL = 1u << 0,   /* fail if the file exists */
	/* Allocate all data now (fixed/flat subformats do this anyway). */
	IMG_CREATE_PREALLOCATE = 1u << 1,
};

int img_create(const char *path, const struct img_create_options *opts,
	       char *errbuf, size_t errlen);

/* ---- data ------------------------------------------------------------- */

/* Any byte offset and length; must lie within the virtual size.  An iovec
 * may have any number of entries. */
int img_pread(struct img *img, void *buf, size_t len, uint64_t off);
int img_pwrite(struct img *img, const void *buf, size_t len, uint64_t off);
int img_preadv(struct img *img, const struct iovec *iov, int iovcnt,
	       uint64_t off);
int img_pwritev(struct img *img, const struct iovec *iov, int iovcnt,
		uint64_t off);
int img_flush(struct img *img);

/* ---- the iovec toolkit (libimg/iov.c) --------------------------------- */

size_t img_iov_total(const struct iovec *iov, int iovcnt);
/* Byte ranges [off, off+len) of an iovec: fill, gather into / scatter
 * from a flat buffer (returning the bytes moved), test for zeros. */
void img_iov_memset(const struct iovec *iov, int iovcnt, size_t off, int c,
		    size_t len);
size_t img_iov_to_buf(const struct iovec *iov, int iovcnt, size_t off,
		      void *buf, size_t len);
size_t img_iov_from_buf(const struct iovec *iov, int iovcnt, size_t off,
			const void *buf, size_t len);
bool img_buf_is_zero(const void *buf, size_t len);
bool img_iov_is_zero(const struct iovec *iov, int iovcnt, size_t len);
bool img_iov_range_is_zero(const struct iovec *iov, int iovcnt, size_t off,
			   size_t len);
/* Fills out[] (at most outmax entries) with the part [off, off+len) and
 * returns the count; -EINVAL when outmax is too small or the iovec too
 * short. */
int img_iov_slice(const struct iovec *iov, int iovcnt, size_t off, size_t len,
		  struct iovec *out, int outmax);

/* A view of part of a request's iovec, optionally after a leading buffer
 * (a bitmap or header that goes out in the same write): its entries on
 * the stack when few, on the heap when many.  init sizes it for slices
 * of an iovec of iovcnt entries (plus a lead); set may be called again
 * for other slices; release frees.  img_iov_view does init and set in
 * one for a single slice. */
#define IMG_IOV_VIEW_STACK 17
struct img_iov_view {
	struct iovec *iov; /* cnt entries */
	int cnt;
	int cap;
	struct iovec stack[IMG_IOV_VIEW_STACK];
};
int img_iov_view_init(struct img_iov_view *v, int iovcnt);
int img_iov_view_set(struct img_iov_view *v, const void *lead,
		     size_t lead_len, const struct iovec *iov, int iovcnt,
		     size_t off, size_t len);
int img_iov_view(struct img_iov_view *v, const struct iovec *iov, int iovcnt,
		 size_t off, size_t len);
void img_iov_view_release(struct img_iov_view *v);

enum img_zero_flags {
	/* The range may be deallocated (made a hole / unallocated) rather
	 * than written, as long as it then reads as zero. */
	IMG_ZERO_MAY_UNMAP = 1u << 0,
};
int img_write_zeroes(struct img *img, uint64_t off, uint64_t len,
		     unsigned flags);
/* Advisory: the range's contents become unspecified (but stay within what
 * the image or its parent held, or zero).  Whole blocks are deallocated. */
int img_discard(struct img *img, uint64_t off, uint64_t len);

/* ---- allocation ------------------------------------------------------- */

enum img_extent_flags {
	IMG_EXTENT_DATA = 1u << 0,      /* backed by stored data */
	IMG_EXTENT_ZERO = 1u << 1,      /* guaranteed to read as zeros */
	/* Allocated in this layer (otherwise it falls through to a parent
	 * or reads as zero when there is none). */
	IMG_EXTENT_ALLOCATED = 1u << 2,
};

struct img_extent {
	uint64_t start;       /* virtual offset */
	uint64_t length;      /* bytes, > 0 */
	unsigned flags;       /* enum img_extent_flags */
	int depth;            /* 0: this image, 1: its parent, ...; -1: none */
	int64_t file_offset;  /* host offset of the data when known, else -1 */
};

/* Describe the extent starting at off, at most len bytes long, resolving
 * through the backing chain.  ext->length is never 0 for len > 0. */
int img_block_status(struct img *img, uint64_t off, uint64_t len,
		     struct img_extent *ext);
/* The same for this layer only (no fall-through): depth 0 or -1. */
int img_block_status_layer(struct img *img, uint64_t off, uint64_t len,
			   struct img_extent *ext);

/* ---- size --------------------------------------------------------------*/

uint64_t img_size(const struct img *img);

enum img_resize_flags {
	IMG_RESIZE_SHRINK = 1u << 0,    /* allow the size to go down */
};
/* Growing over a longer parent zeroes the new room (reads as zeros, not as
 * the parent's data there). */
int img_resize(struct img *img, uint64_t new_size, unsigned flags);

/* ---- description -------------------------------------------------------*/

enum img_kv_type { IMG_KV_STRING, IMG_KV_INT, IMG_KV_BOOL };

struct img_kv {
	char key[48];
	enum img_kv_type type;
	char str[256];
	int64_t num;                /* IMG_KV_INT and IMG_KV_BOOL */
};


/* Facts about one layer.  The library allocates it (img_get_info) and it
 * grows at the end in later versions: struct_size is the size of this
 * one.  The lists are on the heap and have no fixed limit. */
struct img_info {
	size_t struct_size;
	char filename[4096];
	char format[16];              /* driver name */
	char subformat[32];           /* "dynamic", "monolithicSparse", ... */
	uint64_t virtual_size;
	uint64_t actual_size;         /* bytes allocated on the host, all files */
	uint32_t cluster_size;        /* block/grain size, 0 if none */
	bool dirty;                   /* unclean-shutdown flag set */
	bool read_only;
	char backing_filename[4096];  /* as recorded in the image */
	char backing_full[4096];      /* resolved path of the opened parent */
	char backing_format[16];
	struct { uint32_t cylinders, heads, sectors; } geometry; /* 0s: none */
	char uuid[40];                /* textual, "" if the format has none */
	char parent_uuid[40];
	/* Format-specific facts, in order (qemu-img's "format-specific"). */
	int nkv;
	struct img_kv *kv;
	/* Every host file that makes up this layer (descriptor, extents). */
	int nfiles;
	char **files;
	/* The store cannot tell what it holds (HTTP, an NBD server without
	 * block status): actual_size is 0 and means nothing. */
	bool actual_size_unknown;
};

int img_get_info(struct img *img, struct img_info **out);
void img_info_free(struct img_info *info);
const char *img_filename(const struct img *img);
const char *img_format(const struct img *img);
struct img *img_backing(const struct img *img);   /* NULL at the chain's end */
bool img_is_writable(const struct img *img);
/* Cluster/block/grain size of this layer, or 0 when it has none. */
uint32_t img_cluster_size(const struct img *img);

/* ---- checking --------------------------------------------------------- */

enum img_check_fix {
	IMG_CHECK_FIX_LEAKS = 1u << 0,
	IMG_CHECK_FIX_ERRORS = 1u << 1,
};

#define IMG_CHECK_MAX_MESSAGES 64

struct img_check_result {
	uint64_t corruptions;
	uint64_t leaks;
	uint64_t check_errors;          /* could not check something */
	uint64_t corruptions_fixed;
	uint64_t leaks_fixed;
	uint64_t allocated_clusters;
	uint64_t total_clusters;
	uint64_t fragmented_clusters;
	uint64_t image_end_offset;
	int nmessages;                  /* first messages, one line each */
	char messages[IMG_CHECK_MAX_MESSAGES][256];
};

/* Opens nothing itself: the handle must be opened (IMG_OPEN_CHECK, and
 * IMG_OPEN_RDWR when fix != 0).  Returns 0 when the check ran (whatever it
 * found) or -ENOTSUP when the format has no checks. */
int img_check(struct img *img, struct img_check_result *res, unsigned fix);

/* ---- chains ----------------------------------------------------------- */

/* Rewrite this image's parent reference (rebase -u, snapshot).  parent may
 * be NULL to make the image standalone.  The parent must already be open;
 * its identity (UUID, CID, timestamp) is recorded in the child. */
int img_set_backing(struct img *img, const char *backing_file,
		    const char *backing_format, struct img *parent);

/* Copy every range allocated in from's own layer (img_block_status_layer)
 * into `to` at the same offsets: data as data, allocated zeros as zeros
 * (commit, snapshot delete).  With IMG_COPY_ONLY_UNALLOCATED, ranges `to`
 * has allocated in its own layer are left alone.  The message of a
 * failure, on either handle, is left on `to`. */
enum img_copy_layer_flags {
	IMG_COPY_ONLY_UNALLOCATED = 1u << 0,
};
int img_copy_layer(struct img *from, struct img *to, unsigned flags);
/* The text to record in child so that it finds parent (both existing
 * paths): relative to child's directory, or absolute when that is more
 * than two levels up.  malloc'ed; NULL with errno set. */
char *img_parent_reference(const char *child, const char *parent);
/* Record parent (at parent_path) again as child's parent, with ref as the
 * text (NULL: img_parent_reference): after the parent's contents changed
 * (formats that keep the parent's identity in the child: VMDK CID, VDI
 * UUIDs), or after either moved.  Opens both itself. */
int img_record_parent(const char *child_path, const char *child_format,
		      const char *parent_path, const char *parent_format,
		      const char *ref, char *errbuf, size_t errlen);

/* ---- internal snapshots ----------------------------------------------- */

/* Snapshots kept inside the image file (qcow2).  The list functions return
 * -ENOTSUP for formats without them; img_has_internal_snapshots says so
 * without asking. */
struct img_snapshot {
	char id[64];
	char name[256];
	uint64_t date_sec;
	uint32_t date_nsec;
	uint64_t vm_clock_nsec;
	uint64_t vm_state_size;
	uint64_t disk_size;
};

bool img_has_internal_snapshots(const struct img *img);
/* *list is malloc'ed (free it); *count entries, oldest first. */
int img_snapshot_list(struct img *img, struct img_snapshot **list,
		      int *count);
int img_snapshot_create(struct img *img, const char *name);
/* Make the disk read what snapshot name (by name or id) held. */
int img_snapshot_apply(struct img *img, const char *name);
int img_snapshot_delete(struct img *img, const char *name);
/* Read-only handles: from now on reads show snapshot name's contents
 * (and the size is the snapshot's). */
int img_snapshot_load(struct img *img, const char *name);

/* ---- snapshots of a disk (libimg/snapshot.c) ---------------------------*/

/* Named states of a disk, by its path, whatever keeps them: a format with
 * internal snapshots (qcow2) keeps them inside the file (the functions
 * above do the work); every other format that layers over a parent keeps
 * snapshot TAG as the read-only layer DISK.snapshots/TAG.EXT under the
 * disk, whose path never changes (see docs/snapshots.md).  Callers need
 * not know which: img_snapshots_kind() says, for display only.
 *
 * A handle is used by one thread at a time; handles of different disks
 * are independent.  Across processes a handle opened IMG_OPEN_RDWR
 * excludes every other handle of the same disk and refuses a disk that
 * another process has open for writing (-EBUSY); read-only handles
 * exclude writers only.  Each operation is crash-safe: a crash at any
 * point leaves the disk reading what it read before or after, with the
 * snapshot list before or after; the next writer (or
 * img_snapshots_recover) finishes or undoes the interrupted operation,
 * and read-only handles refuse the disk until then (-EUCLEAN). */
struct img_snapshots;

enum img_snapshot_kind {
	IMG_SNAPSHOT_NONE = 0,    /* raw, remote storage: no snapshots here */
	IMG_SNAPSHOT_INTERNAL,    /* inside the image file (qcow2) */
	IMG_SNAPSHOT_LAYERS,      /* layers in DISK.snapshots/ */
};

#define IMG_SNAPSHOT_TAG_MAX 64

struct img_snapshot_entry {
	char name[256];
	char id[64];              /* internal snapshots: the format's id */
	int64_t created;          /* seconds since the epoch, 0 when unknown */
	uint64_t virtual_size;    /* the disk's size in that state */
	uint64_t disk_usage;      /* host bytes of its layer, 0 when internal */
	const char *path;         /* its layer's file (in the list's own
	                             allocation); NULL when internal */
};

/* A name a new snapshot may take: 1 to IMG_SNAPSHOT_TAG_MAX letters,
 * digits and . _ - + @, not starting with . or -.  (Internal snapshots
 * made by other tools may have other names; they are found too.) */
bool img_snapshot_tag_valid(const char *tag);

/* Open the snapshots of the disk at path (format NULL: probe).  flags:
 * IMG_OPEN_RDONLY to list and read snapshots, IMG_OPEN_RDWR to change
 * them (this finishes an interrupted operation first), IMG_OPEN_NO_LOCK
 * to skip the locks (experts).  Errors: -EBUSY another process uses the
 * disk or its snapshots, -EUCLEAN (read-only) an interrupted operation
 * awaits recovery, -EACCES/-EROFS a writer on a read-only file, and the
 * errors of img_open; the message goes to errbuf. */
int img_snapshots_open(struct img_snapshots **out, const char *path,
		       const char *format, unsigned flags, char *errbuf,
		       size_t errlen);
/* Releases the locks; returns the final flush's error, if any.  The
 * handle is freed in every case. */
int img_snapshots_close(struct img_snapshots *snaps);
enum img_snapshot_kind img_snapshots_kind(const struct img_snapshots *snaps);
/* The one-line message of the handle's last failure ("" when none). */
const char *img_snapshots_errmsg(const struct img_snapshots *snaps);

/* *list is one malloc'ed block, strings included (free(*list) frees it
 * all): *count entries, newest first; none for IMG_SNAPSHOT_NONE. */
int img_snapshots_list(struct img_snapshots *snaps,
		       struct img_snapshot_entry **list, int *count);
/* 0 when snapshot tag exists, -ENOENT when not. */
int img_snapshots_find(struct img_snapshots *snaps, const char *tag);
/* Keep the disk's current contents as snapshot tag.  -EEXIST: the tag
 * is taken; -EINVAL: not a valid tag; -ENOTSUP: the disk cannot have
 * snapshots (raw: convert it first); -EROFS: a read-only handle. */
int img_snapshots_create(struct img_snapshots *snaps, const char *tag);
enum img_snapshot_revert_flags {
	/* Layers: also discard snapshots newer than tag (otherwise
	 * -ENOTEMPTY).  Internal snapshots are independent and stay. */
	IMG_SNAPSHOT_REVERT_DISCARD_NEWER = 1u << 0,
};
/* Make the disk read what it read when tag was taken; what was written
 * since is discarded, tag is kept.  -ENOENT: no such snapshot. */
int img_snapshots_revert(struct img_snapshots *snaps, const char *tag,
			 unsigned flags);
/* Remove snapshot tag; what the disk reads does not change. */
int img_snapshots_delete(struct img_snapshots *snaps, const char *tag);
/* A read-only handle on snapshot tag's contents (close it with
 * img_close, before closing snaps). */
int img_snapshots_open_image(struct img_snapshots *snaps, const char *tag,
			     struct img **out);
/* Remove every snapshot layer of the disk at path (its DISK.snapshots/
 * folder), for a caller deleting the disk itself; internal snapshots go
 * with the image file.  0 (also when there were none) or -errno with the
 * message in errbuf. */
int img_snapshots_remove_all(const char *path, char *errbuf, size_t errlen);
/* Finish or undo an operation on the disk's snapshots that a crash
 * interrupted.  Returns 1 when it did, 0 when there was none, or -errno
 * with the message in errbuf. */
int img_snapshots_recover(const char *path, const char *format, char *errbuf,
			  size_t errlen);

/* ---- formats and sizes -------------------------------------------------*/

/* NULL-terminated list of driver names. */
const char *const *img_formats(void);
/* Canonical driver name for a name or alias ("vpc" -> "vhd"), or NULL. */
const char *img_format_canonical(const char *name);
/* Create options a format accepts, NULL-terminated (for --help). */
const char *const *img_format_create_options(const char *format);
/* What a format can do, so that tools ask instead of comparing names. */
enum img_format_caps {
	IMG_FORMAT_BACKING = 1u << 0,  /* layers over a parent */
	/* compressed writes: when opened with IMG_OPEN_COMPRESS, or as the
	 * subformat img_format_compressed_subformat names */
	IMG_FORMAT_COMPRESS = 1u << 1,
};
unsigned img_format_caps(const char *format);
const char *img_format_compressed_subformat(const char *format);
/* "1G", "512M", "100K", "2048" (bytes), "1.5G", "20s" (sectors)
 * -> bytes.  -EINVAL on garbage, -ERANGE on overflow. */
int img_parse_size(const char *text, uint64_t *out);
/* Human form: "1 GiB", "300 MiB 1.5 KiB"... into buf. */
const char *img_format_size(uint64_t bytes, char *buf, size_t len);

const char *img_version(void);

/* The path of target relative to the directory dir ("../lib/base.vdi"),
 * both absolute and normalised (realpath); the way a child records its
 * parent.  Returns the number of "../" it starts with, or -ENAMETOOLONG
 * when it does not fit in out. */
int img_path_relative(const char *dir, const char *target, char *out,
		      size_t outlen);

/* ---- test hooks --------------------------------------------------------*/

/* Called before every host write, pwrite, fsync, ftruncate and fallocate
 * libimg issues, and before every link, rename, unlink and mkdir.  Returning a negative errno fails that call (fault
 * injection); the hook may also kill the process (crash tests).
 * Only tests set it; NULL disables. */
enum img_io_op {
	IMG_IO_WRITE, IMG_IO_SYNC, IMG_IO_TRUNCATE, IMG_IO_ALLOCATE,
	/* a name made, renamed or removed in a directory (snapshots) */
	IMG_IO_DIRECTORY,
};
typedef int (*img_io_hook_fn)(enum img_io_op op, int fd, uint64_t off,
			      uint64_t len, void *opaque);
void img_set_io_hook(img_io_hook_fn fn, void *opaque);

/* Snapshots a storage backend keeps of the object it names (RBD images:
 * "rbd:pool/image"); what imgtool snapshot lists besides its own.  Fills
 * up to max entries and returns how many there are, or -ENOTSUP for a
 * backend without them (a local file), or another -errno with a message. */
struct img_backend_snapshot {
	char name[128];
	uint64_t id;
	uint64_t size;   /* virtual size at the snapshot */
	int64_t created; /* seconds since the epoch, 0 when unknown */
};
int img_backend_snapshots(const char *name, struct img_backend_snapshot *out,
			  int max, char *errbuf, size_t errlen);

/* Remove the object a name stores an image in: a local file, an RBD
 * image.  -ENOTSUP for backends whose objects are not ours to remove (an
 * NBD export, HTTP); another -errno with a message. */
int img_remove(const char *name, char *errbuf, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
