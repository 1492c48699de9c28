/* SPDX-License-Identifier: MIT */
/*
 * libimg internal: the format driver interface and the helpers drivers use.
 * Drivers include this header (it includes img.h); users never do.
 *
 * Adding a format: a folder formats/<fmt>/ with <fmt>.c defining
 * `const struct img_driver img_driver_<fmt>`, and one entry in
 * libimg/drivers.c.
 */
#ifndef LIBIMG_DRIVER_H
#define LIBIMG_DRIVER_H

#include "img.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>

/* ---- host files --------------------------------------------------------
 * Every host I/O a driver does goes through these, so that short reads and
 * writes are looped, EINTR is retried, errors get a message, and the test
 * I/O hook sees every write.  Locking is taken here too.
 *
 * The "file" may be any storage backend (libimg/backend.h): the name
 * selects it, as in qemu-img: a local path, nbd://host[:port]/export,
 * nbd+unix:///export?socket=PATH, rbd:pool/image[@snap][:conf=PATH]
 * [:id=USER], http(s)://... (read-only).  Drivers use only these calls
 * and the fields marked for them; the rest belongs to the backend. */

struct img_file_ops;

struct img_file {
	char *path;           /* as opened (may be relative to cwd) */
	bool writable;
	bool is_block_device; /* a local block device: its size is fixed */
	/* The backend's own (drivers never touch these). */
	const struct img_file_ops *ops; /* NULL: not open */
	void *backend;
	int fd; /* local files */
	/* With IMG_OPEN_DIRECT, where the file system allows it: a second
	 * descriptor of the same file opened O_DIRECT.  The data calls use
	 * it for requests whose offset, lengths and buffers are aligned as
	 * it needs, the cached descriptor for the rest (the kernel keeps the
	 * two coherent).  Zero-initialised means none. */
	bool direct;
	int direct_fd;
	uint32_t direct_align; /* offset, length and memory alignment */
};

/* Opens path (read-only or read-write) and takes the image lock (shared
 * for read-only, exclusive for read-write) unless img opened with
 * IMG_OPEN_NO_LOCK; with IMG_OPEN_DIRECT it opens the direct descriptor
 * too.  Messages go to img. */
int img_file_open(struct img *img, struct img_file *f, const char *path,
		  bool writable);
/* The image's own file (img_filename, writable when opened IMG_OPEN_RDWR)
 * with its size; one shorter than min_size is refused ("file too small
 * for a VHD (N bytes)", format naming it) and closed again. */
int img_file_open_image(struct img *img, struct img_file *f,
			const char *format, uint64_t min_size, uint64_t *size);
/* Creates (O_CREAT|O_TRUNC, or O_EXCL when excl) and locks exclusively. */
int img_file_create(struct img_file *f, const char *path, bool excl,
		    char *errbuf, size_t errlen);
void img_file_close(struct img_file *f);

/* Whole-length I/O.  A read past EOF returns -EIO unless
 * img_file_pread_zero_eof is used, which zero-fills past EOF. */
int img_file_pread(struct img_file *f, void *buf, size_t len, uint64_t off);
int img_file_pread_zero_eof(struct img_file *f, void *buf, size_t len,
			    uint64_t off);
int img_file_pwrite(struct img_file *f, const void *buf, size_t len,
		    uint64_t off);
int img_file_preadv(struct img_file *f, const struct iovec *iov, int iovcnt,
		    uint64_t off);
int img_file_pwritev(struct img_file *f, const struct iovec *iov, int iovcnt,
		     uint64_t off);
int img_file_sync(struct img_file *f);        /* fdatasync */
int img_file_truncate(struct img_file *f, uint64_t size);
/* Deallocate (FALLOC_FL_PUNCH_HOLE|KEEP_SIZE); -EOPNOTSUPP when the file
 * system cannot. */
int img_file_punch_hole(struct img_file *f, uint64_t off, uint64_t len);
/* Make the range read as zero, cheaply where possible (ZERO_RANGE/punch),
 * writing zeros otherwise. */
int img_file_zero_range(struct img_file *f, uint64_t off, uint64_t len);
int img_file_size(struct img_file *f, uint64_t *size);
/* Is the handle open (a zeroed struct img_file is not)? */
bool img_file_is_open(const struct img_file *f);
/* Is it the local file at path (same device and inode)? */
bool img_file_same(const struct img_file *f, const char *path);
/* Is [off, off+len) a hole in the backend (SEEK_DATA/SEEK_HOLE, NBD
 * base:allocation, RBD diff), and how long is the run of the same kind
 * starting at off (at most len)?  Backends that cannot tell say data. */
int img_file_extent(struct img_file *f, uint64_t off, uint64_t len,
		    bool *is_data, uint64_t *run);

/* ---- errors -------------------------------------------------------------*/

/* Records "file: message" on the handle and returns err (a negative errno).
 * The message is formatted printf-style, without trailing newline. */
int img_error(struct img *img, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* The same into a caller buffer (create, probe). */
int img_error_buf(char *buf, size_t len, int err, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* ---- endian helpers (on-disk structures stay in disk order) -------------*/

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define IMG_LE16(v) ((uint16_t)(v))
#define IMG_LE32(v) ((uint32_t)(v))
#define IMG_LE64(v) ((uint64_t)(v))
#define IMG_BE16(v) __builtin_bswap16((uint16_t)(v))
#define IMG_BE32(v) __builtin_bswap32((uint32_t)(v))
#define IMG_BE64(v) __builtin_bswap64((uint64_t)(v))
#else
#define IMG_LE16(v) __builtin_bswap16((uint16_t)(v))
#define IMG_LE32(v) __builtin_bswap32((uint32_t)(v))
#define IMG_LE64(v) __builtin_bswap64((uint64_t)(v))
#define IMG_BE16(v) ((uint16_t)(v))
#define IMG_BE32(v) ((uint32_t)(v))
#define IMG_BE64(v) ((uint64_t)(v))
#endif
/* The conversions are their own inverses: to-cpu and to-disk are the same. */

/* ---- driver table -------------------------------------------------------*/

struct img_create_args {
	const char *path;
	uint64_t size;                 /* bytes (0 only with a backing file) */
	const char *subformat;         /* NULL: default */
	uint32_t cluster_size;         /* 0: default */
	const char *backing_file;      /* as to be recorded */
	const char *backing_format;
	struct img *backing;           /* opened parent (read-only), or NULL */
	bool excl;
	bool preallocate;
	/* Options from -o that are not generic, all in create_options. */
	int nopts;
	struct { const char *key, *value; } opts[32];
};

/* Lookup of a create option by key; NULL when absent. */
const char *img_create_arg(const struct img_create_args *a, const char *key);

/*
 * Locking.  The core holds a reader/writer lock per image around every
 * driver callback.  What runs under which side of it:
 *   open, close, create, resize, check, set_backing,
 *   write_zeroes, discard                  exclusive, always
 *   preadv, block_status, get_info         shared with IMG_DRV_CONCURRENT_READS,
 *                                          otherwise exclusive
 *   pwritev (aligned requests), flush      shared with IMG_DRV_PARALLEL_RW
 *                                          (or img_set_parallel_rw), otherwise
 *                                          exclusive
 * An unaligned write of a driver without IMG_DRV_BYTE_ALIGNED is a
 * read-modify-write of its edge sectors and always runs exclusive, so two
 * of them never interleave on one sector.  A driver that takes writes in
 * parallel keeps its own metadata (block maps, allocation pointers,
 * pending lists) under a lock of its own; writes to the same bytes that
 * overlap in time land in either order, as on a disk.
 */
enum img_driver_flags {
	/* preadv may run concurrently with other preadv calls (the core
	 * then serialises only writes, under a rwlock). */
	IMG_DRV_CONCURRENT_READS = 1u << 0,
	/* The driver handles any byte alignment itself; otherwise the core
	 * hands it only 512-byte-aligned offsets and lengths. */
	IMG_DRV_BYTE_ALIGNED = 1u << 1,
	/* pwritev and flush may run concurrently with each other and with
	 * preadv (needs IMG_DRV_CONCURRENT_READS): see Locking above. */
	IMG_DRV_PARALLEL_RW = 1u << 2,
	/* Opens with IMG_OPEN_COMPRESS: new data is stored compressed. */
	IMG_DRV_COMPRESSED_WRITES = 1u << 3,
};

struct img_driver {
	const char *name;              /* canonical: "vdi" */
	const char *const *aliases;    /* NULL-terminated or NULL: {"vpc", NULL} */
	const char *description;
	unsigned flags;                /* enum img_driver_flags */
	size_t state_size;             /* zeroed, at img_state(img) */
	const char *const *create_options; /* keys accepted in -o beyond the generic ones */
	/* The subformat that stores data compressed (VMDK's streamOptimized),
	 * for formats that compress that way rather than at open. */
	const char *compressed_subformat;

	/* Score 0 (not this format) .. 100 (certain) from the first bytes of
	 * the file (head_len up to 4096), the file's size and the open file
	 * (for formats identified by a trailer, like fixed VHD). */
	int (*probe)(const uint8_t *head, size_t head_len, uint64_t file_size,
		     struct img_file *f);

	int (*create)(const struct img_create_args *args, char *errbuf,
		      size_t errlen);

	/* Open the image at img_filename(img) with img_open_flags(img).  Set
	 * the virtual size with img_set_size() and declare the parent with
	 * img_set_backing_hint(); the core opens the parent after open
	 * returns.  On failure, release everything and return -errno with a
	 * message set; close is not called. */
	int (*open)(struct img *img);
	/* Release everything (the core has already called flush). */
	void (*close)(struct img *img);

	/* off and len are 512-aligned unless IMG_DRV_BYTE_ALIGNED; the range
	 * lies within the virtual size; iov covers exactly len bytes.  Reads
	 * of regions not allocated in this layer call img_read_backing(). */
	int (*preadv)(struct img *img, uint64_t off, const struct iovec *iov,
		      int iovcnt, size_t len);
	int (*pwritev)(struct img *img, uint64_t off, const struct iovec *iov,
		       int iovcnt, size_t len);
	int (*flush)(struct img *img);
	/* Optional.  NULL: the core writes zero buffers / ignores discard. */
	int (*write_zeroes)(struct img *img, uint64_t off, uint64_t len,
			    unsigned flags);
	int (*discard)(struct img *img, uint64_t off, uint64_t len);
	/* This layer only: ext->depth 0 when allocated here, -1 when it
	 * falls through to the parent (the core resolves the chain). */
	int (*block_status)(struct img *img, uint64_t off, uint64_t len,
			    struct img_extent *ext);
	int (*resize)(struct img *img, uint64_t new_size, unsigned flags);
	int (*check)(struct img *img, struct img_check_result *res,
		     unsigned fix);
	/* Fill the format-specific parts; the core fills filename, format,
	 * virtual_size, actual_size (from files[]), backing_full. */
	int (*get_info)(struct img *img, struct img_info *info);
	/* Does parent match what the child recorded (UUID, CID, ...)?
	 * 0 yes, -ESTALE with a message no.  Optional. */
	int (*backing_matches)(struct img *img, struct img *parent);
	int (*set_backing)(struct img *img, const char *backing_file,
			   const char *backing_format, struct img *parent);
	/* Internal snapshots (optional; all or none).  The core holds the
	 * write lock; apply and load set the size with img_set_size. */
	int (*snapshot_list)(struct img *img, struct img_snapshot **list,
			     int *count);
	int (*snapshot_create)(struct img *img, const char *name);
	int (*snapshot_apply)(struct img *img, const char *name);
	int (*snapshot_delete)(struct img *img, const char *name);
	int (*snapshot_load)(struct img *img, const char *name);
};

/* ---- what drivers may ask of the core ----------------------------------*/

void *img_state(struct img *img);
unsigned img_open_flags(const struct img *img);
void img_set_size(struct img *img, uint64_t size);
/* From open: this image's pwritev and flush may run in parallel (a
 * subformat that touches no metadata on writes: fixed VHD, flat VMDK),
 * as IMG_DRV_PARALLEL_RW declares for a whole driver. */
void img_set_parallel_rw(struct img *img, bool on);
/* The parent reference as recorded (path relative to the image's directory
 * or absolute, may be NULL when the format finds parents by UUID only) and
 * its format (NULL: probe).  May be called several times to give
 * candidates in order of preference (VHD parent locators, VDI "all VDIs
 * next to me"); the core takes the first that exists and matches. */
int img_add_backing_candidate(struct img *img, const char *path,
			      const char *format);
/* The format records a parent but cannot name it: search_dirs and the
 * image's own directory are scanned for files of this format, each checked
 * with backing_matches. */
void img_set_backing_by_identity(struct img *img, const char *format);
/* Fill [off, off+len) of the iovec from the parent, or zeros when there is
 * none or the parent is shorter.  iov covers exactly len bytes. */
int img_read_backing(struct img *img, uint64_t off, const struct iovec *iov,
		     int iovcnt, size_t len);
/* Directory of the image file (for resolving relative extent names). */
const char *img_dirname(const struct img *img);

/* The iovec toolkit is in img.h. */

/* Random bytes for UUIDs (getrandom). */
void img_random_bytes(void *buf, size_t len);
/* The value of a hexadecimal digit, -1 for any other character. */
int img_hex_digit(char c);
/* RFC 4122 text form of 16 bytes, big-endian (as written). */
void img_uuid_format(const uint8_t uuid[16], char out[37]);
/* get_info helpers: append one format-specific fact (dropped past
 * IMG_INFO_MAX_KV), or one host file of this layer (listed once). */
void img_info_add_str(struct img_info *info, const char *key,
		      const char *value);
void img_info_add_int(struct img_info *info, const char *key, int64_t value);
void img_info_add_bool(struct img_info *info, const char *key, bool value);
void img_info_add_file(struct img_info *info, const char *path);
/* Check-result helper: append one message line (dropped past the limit). */
void img_check_note(struct img_check_result *res, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* The table, in probe order (libimg/driver_list.h). */
enum {
#define IMG_DRIVER(name) IMG_DRIVER_INDEX_##name,
#include "driver_list.h"
#undef IMG_DRIVER
	IMG_NDRIVERS
};
extern const struct img_driver *const img_drivers[IMG_NDRIVERS];
const struct img_driver *img_driver_find(const char *name);

#endif
