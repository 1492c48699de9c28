/* SPDX-License-Identifier: MIT */
/*
 * libimg private: the storage backends under struct img_file.
 *
 * A name selects a backend as qemu-img's do: a local path, nbd:// and
 * nbd+unix:// URIs, rbd:pool/image[@snap][:key=value...], http(s)://.
 * Each backend is one table of operations in libimg/backend_<name>.c; the
 * img_file_* calls in driver.h loop, check and report around them, so a
 * format driver never knows which backend holds its bytes.
 */
#ifndef LIBIMG_BACKEND_H
#define LIBIMG_BACKEND_H

#include "driver.h"

#include <pthread.h>
#include <sys/uio.h>

struct img_file_ops {
	const char *name; /* "file", "nbd", "rbd", "http" */
	/* Open the name (already matched to this backend).  flags are the
	 * image's IMG_OPEN_* flags (0 for probing).  The message goes to
	 * errbuf, without the name in front. */
	int (*open)(struct img_file *f, const char *name, bool writable,
		    unsigned flags, char *errbuf, size_t errlen);
	/* Create an empty object (size 0) and open it read-write.  NULL:
	 * this backend cannot create. */
	int (*create)(struct img_file *f, const char *name, bool excl,
		      char *errbuf, size_t errlen);
	void (*close)(struct img_file *f);

	/* Whole-length transfers; a message through img_file_fail.  A read
	 * that reaches the end returns -EIO unless zero_eof, which zero
	 * fills the rest. */
	int (*preadv)(struct img_file *f, const struct iovec *iov, int iovcnt,
		      uint64_t off, bool zero_eof);
	int (*pwritev)(struct img_file *f, const struct iovec *iov, int iovcnt,
		       uint64_t off);
	int (*flush)(struct img_file *f);
	int (*size)(struct img_file *f, uint64_t *size);
	/* The rest may be NULL: then truncate fails with -ENOTSUP, discard
	 * with -EOPNOTSUPP, zero writes zero buffers, extent says "data". */
	int (*truncate)(struct img_file *f, uint64_t size);
	int (*discard)(struct img_file *f, uint64_t off, uint64_t len);
	/* -EOPNOTSUPP when it cannot do it cheaply (the caller then writes
	 * zeros). */
	int (*zero)(struct img_file *f, uint64_t off, uint64_t len);
	int (*extent)(struct img_file *f, uint64_t off, uint64_t len,
		      bool *is_data, uint64_t *run);
	/* Snapshots the store keeps of this object (RBD); count or -errno. */
	int (*list_snapshots)(struct img_file *f,
			      struct img_backend_snapshot *out, int max);
	/* Bytes the store holds for the object (what "disk size" shows);
	 * -ENOTSUP when it cannot tell. */
	int (*allocated)(struct img_file *f, uint64_t *bytes);
	/* Remove the object (a failed create cleans up after itself). */
	int (*remove)(const char *name, char *errbuf, size_t errlen);
};

extern const struct img_file_ops img_backend_file;
extern const struct img_file_ops img_backend_nbd;
extern const struct img_file_ops img_backend_rbd;
extern const struct img_file_ops img_backend_http;

/* The backend a name belongs to (the local file when no other claims
 * it). */
const struct img_file_ops *img_backend_for(const char *name);

/* Records "name: message" as the thread's last host I/O error and
 * returns err. */
int img_file_fail(const struct img_file *f, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* The hook tests use to fail or observe modifying I/O (fd -1 for
 * backends without a descriptor). */
int img_file_run_io_hook(enum img_io_op op, int fd, uint64_t off, uint64_t len);

/* What a remote backend learnt about allocation in one round trip (NBD
 * block status, RBD diff), kept until the next write, so that walking an
 * image run by run costs one request per window rather than per run. */
#define IMG_EXTENT_CACHE_MAX 1024
struct img_extent_cache {
	pthread_mutex_t lock;
	uint64_t start, end; /* covered range; empty when equal */
	uint64_t generation; /* bumped by every clear */
	int n;
	struct {
		uint64_t off, len;
		bool data;
	} e[IMG_EXTENT_CACHE_MAX];
};
void img_extent_cache_init(struct img_extent_cache *c);
void img_extent_cache_destroy(struct img_extent_cache *c);
/* Forget everything (after any write). */
void img_extent_cache_clear(struct img_extent_cache *c);
/* Filling a private copy (no locking): start at off, then runs in order;
 * a run of the same kind as the last one extends it.  Returns false when
 * full (what is there stays valid). */
void img_extent_cache_begin(struct img_extent_cache *c, uint64_t off);
bool img_extent_cache_append(struct img_extent_cache *c, uint64_t len,
			     bool data);
uint64_t img_extent_cache_generation(struct img_extent_cache *c);
/* Install a filled copy, unless a clear came after generation (a write
 * may have made it stale). */
void img_extent_cache_install(struct img_extent_cache *c,
			      const struct img_extent_cache *filled,
			      uint64_t generation);
/* The run at off (at most len) if the cache covers off. */
bool img_extent_cache_lookup(struct img_extent_cache *c, uint64_t off,
			     uint64_t len, bool *is_data, uint64_t *run);

/* An extent question (the backend's .extent) answered from the cache, or
 * else by asking the backend about the window at off (up to window_max,
 * not past size): fill fills a private copy begun at off and returns 0
 * (what it filled is kept and answers, none: the answer stays "data") or
 * -errno with the message set, which is returned. */
typedef int (*img_extent_fill_fn)(struct img_file *f, uint64_t off,
				  uint64_t window,
				  struct img_extent_cache *filled);
int img_extent_cache_answer(struct img_file *f, struct img_extent_cache *c,
			    uint64_t size, uint64_t window_max,
			    img_extent_fill_fn fill, uint64_t off, uint64_t len,
			    bool *is_data, uint64_t *run);

/* A backend's preadv for an object of size bytes: read (a whole-length
 * read below size) for the part below size; past it, zeros when zero_eof,
 * else -EIO "unexpected end of WHAT at offset N". */
typedef int (*img_backend_read_fn)(struct img_file *f, const struct iovec *iov,
				   int iovcnt, uint64_t off);
int img_backend_read_below(struct img_file *f, const struct iovec *iov,
			   int iovcnt, uint64_t off, uint64_t size,
			   bool zero_eof, const char *what,
			   img_backend_read_fn read);

/* Seconds a remote backend waits for an answer before it gives up
 * (IMG_BACKEND_TIMEOUT in the environment, default 30). */
int img_backend_timeout(void);

#endif
