/* SPDX-License-Identifier: MIT */
/*
 * The Ceph RBD backend: rbd:pool/image[@snapshot][:conf=PATH][:id=USER]
 * [:key=value...] through librbd, as qemu-img names them.  Further
 * key=value pairs are Ceph options (rados_conf_set).
 *
 * Reads and writes go out as asynchronous requests of at most half an object
 * each, all in flight together.  A write past the end grows the image
 * first (so any format can live on an RBD image, as with QEMU).  Every
 * wait is bounded: the monitor, OSD and mount timeouts are set from
 * img_backend_timeout(), so a cluster that goes away fails the request
 * rather than hanging.  Block status comes from rbd_diff_iterate2 (holes
 * are objects never written), snapshots from rbd_snap_list.
 */
#include "backend.h"
#include "dynlib.h"
#include "internal.h"

#include <inttypes.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <rados/librados.h>
#include <rbd/librbd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* librbd (and librados through it) is loaded by the first rbd: name (dynlib.h). */
#define RBD_FUNCTIONS(X)             \
	X(rados_conf_get)            \
	X(rados_conf_parse_env)      \
	X(rados_conf_read_file)      \
	X(rados_conf_set)            \
	X(rados_connect)             \
	X(rados_create)              \
	X(rados_ioctx_create)        \
	X(rados_ioctx_destroy)       \
	X(rados_shutdown)            \
	X(rbd_aio_create_completion) \
	X(rbd_aio_discard)           \
	X(rbd_aio_get_return_value)  \
	X(rbd_aio_is_complete)       \
	X(rbd_aio_readv)             \
	X(rbd_aio_release)           \
	X(rbd_aio_wait_for_complete) \
	X(rbd_aio_write)             \
	X(rbd_aio_write_zeroes)      \
	X(rbd_close)                 \
	X(rbd_create)                \
	X(rbd_diff_iterate2)         \
	X(rbd_flush)                 \
	X(rbd_lock_acquire)          \
	X(rbd_open)                  \
	X(rbd_open_read_only)        \
	X(rbd_remove)                \
	X(rbd_resize)                \
	X(rbd_snap_get_timestamp)    \
	X(rbd_snap_list)             \
	X(rbd_snap_list_end)         \
	X(rbd_stat)
IMG_DYNLIB_DEFINE(rbd, RBD_FUNCTIONS, "librbd.so.1", "librbd1");
#define rados_conf_get rbd_lib.rados_conf_get
#define rados_conf_parse_env rbd_lib.rados_conf_parse_env
#define rados_conf_read_file rbd_lib.rados_conf_read_file
#define rados_conf_set rbd_lib.rados_conf_set
#define rados_connect rbd_lib.rados_connect
#define rados_create rbd_lib.rados_create
#define rados_ioctx_create rbd_lib.rados_ioctx_create
#define rados_ioctx_destroy rbd_lib.rados_ioctx_destroy
#define rados_shutdown rbd_lib.rados_shutdown
#define rbd_aio_create_completion rbd_lib.rbd_aio_create_completion
#define rbd_aio_discard rbd_lib.rbd_aio_discard
#define rbd_aio_get_return_value rbd_lib.rbd_aio_get_return_value
#define rbd_aio_is_complete rbd_lib.rbd_aio_is_complete
#define rbd_aio_readv rbd_lib.rbd_aio_readv
#define rbd_aio_release rbd_lib.rbd_aio_release
#define rbd_aio_wait_for_complete rbd_lib.rbd_aio_wait_for_complete
#define rbd_aio_write rbd_lib.rbd_aio_write
#define rbd_aio_write_zeroes rbd_lib.rbd_aio_write_zeroes
#define rbd_close rbd_lib.rbd_close
#define rbd_create rbd_lib.rbd_create
#define rbd_diff_iterate2 rbd_lib.rbd_diff_iterate2
#define rbd_flush rbd_lib.rbd_flush
#define rbd_lock_acquire rbd_lib.rbd_lock_acquire
#define rbd_open rbd_lib.rbd_open
#define rbd_open_read_only rbd_lib.rbd_open_read_only
#define rbd_remove rbd_lib.rbd_remove
#define rbd_resize rbd_lib.rbd_resize
#define rbd_snap_get_timestamp rbd_lib.rbd_snap_get_timestamp
#define rbd_snap_list rbd_lib.rbd_snap_list
#define rbd_snap_list_end rbd_lib.rbd_snap_list_end
#define rbd_stat rbd_lib.rbd_stat

enum {
	RBD_MAX_IN_FLIGHT = 32,
	RBD_MAX_BEHIND = 64,
	/* 16 objects (32 requests): deep enough for the OSD to batch its
	 * commits (a 1 GiB convert as fast as with 128 MiB), small enough
	 * that the buffers stay few */
	RBD_BEHIND_BYTES = 64u << 20,
	RBD_PIECE_IOV = 16,
	RBD_MAX_OPTIONS = 16,
	/* block status looks this far at once (diff_iterate visits every
	 * object in the range) */
	RBD_STATUS_WINDOW = 256u << 20,
};

struct rbd_name {
	const char *options; /* ":conf=...:id=..." as given, "" without */
	char *buf;	     /* the copy the pointers below point into */
	const char *pool, *image, *snap, *conf, *id;
	int nopt;
	const char *key[RBD_MAX_OPTIONS], *value[RBD_MAX_OPTIONS];
};

struct rbd_backend {
	struct rbd_cluster *home; /* the process's connection it uses */
	rados_t cluster;
	rados_ioctx_t io;
	rbd_image_t image;
	bool have_io, have_image;
	pthread_mutex_t grow_lock;
	uint64_t size;
	uint64_t piece; /* request size: half an object */
	struct img_extent_cache status;
	/* Writes behind: each write is copied and sent, and the call returns;
	 * a read or write that overlaps one in flight waits for it, flush and
	 * every other operation wait for all.  The first failure is kept and
	 * returned by the next write or flush. */
	pthread_mutex_t behind_lock;
	/* completions count up under signal_lock only: librbd may call the
	 * callback in the thread that submits, which holds behind_lock */
	pthread_mutex_t signal_lock;
	pthread_cond_t behind_done;
	uint64_t completions;
	int nbehind;
	uint64_t behind_bytes;
	struct rbd_write_behind {
		rbd_completion_t c;
		uint64_t off, len;
		void *buf;
		bool done;
	} behind[RBD_MAX_BEHIND];
	int behind_error;
	uint64_t behind_error_off;
	/* Request-sized copy buffers of finished writes, kept for the next
	 * ones: fresh memory costs a page fault per 4 KiB, more than the
	 * copy itself. */
	int nspare;
	void *spare[RBD_MAX_BEHIND];
};

/* "rbd:pool/image@snap:conf=/x:id=admin" into its parts. */
static int rbd_parse(const char *name, struct rbd_name *n, char *errbuf,
		     size_t errlen)
{
	char *p, *opt;

	memset(n, 0, sizeof(*n));
	n->options = strchr(name + 4, ':');
	if (!n->options)
		n->options = "";
	n->buf = strdup(name + 4);
	if (!n->buf)
		return img_error_buf(errbuf, errlen, -ENOMEM, "out of memory");
	opt = strchr(n->buf, ':');
	if (opt)
		*opt++ = '\0';
	p = strchr(n->buf, '/');
	if (!p || p == n->buf || !p[1]) {
		free(n->buf);
		return img_error_buf(
			errbuf, errlen, -EINVAL,
			"an RBD name is rbd:POOL/IMAGE[@SNAPSHOT][:conf=PATH][:id=USER]");
	}
	*p = '\0';
	n->pool = n->buf;
	n->image = p + 1;
	p = strchr(p + 1, '@');
	if (p) {
		*p = '\0';
		n->snap = p + 1;
	}
	while (opt && *opt) {
		char *next = strchr(opt, ':'), *eq;

		if (next)
			*next++ = '\0';
		eq = strchr(opt, '=');
		if (!eq) {
			/* the message quotes the option, which lives in n->buf */
			int r = img_error_buf(
				errbuf, errlen, -EINVAL,
				"RBD option '%s' is not key=value", opt);
			free(n->buf);
			return r;
		}
		*eq = '\0';
		if (strcmp(opt, "conf") == 0) {
			n->conf = eq + 1;
		} else if (strcmp(opt, "id") == 0) {
			n->id = eq + 1;
		} else if (n->nopt < RBD_MAX_OPTIONS) {
			n->key[n->nopt] = opt;
			n->value[n->nopt] = eq + 1;
			n->nopt++;
		}
		opt = next;
	}
	return 0;
}

static void rbd_drain(struct rbd_backend *b);

/* One connection per cluster (per set of options) for the whole process:
 * connecting costs a round of monitor messages and authentication, and a
 * command opens an image several times (probe, create, open). */
static pthread_mutex_t clusters_lock = PTHREAD_MUTEX_INITIALIZER;
static struct rbd_cluster {
	char *options;
	rados_t cluster;
	int users; /* backends connected through it */
	struct rbd_cluster *next;
} * clusters;

/* Exit with a client still connected lets librados's threads (its
 * finisher, its messenger) run on while the exit handlers destroy the
 * library's globals: a SIGSEGV now and then, after the work is done
 * (Ceph tracker 36732; the rados tool shuts down before every exit for
 * it).  Registered after librados is loaded, so it runs before that
 * library's own exit handlers.  A connection still in use (an exit
 * with an image open) is left as it is: shutting it down under its
 * user would be worse. */
static void rbd_clusters_shutdown(void)
{
	pthread_mutex_lock(&clusters_lock);
	while (clusters) {
		struct rbd_cluster *c = clusters;

		clusters = c->next;
		if (c->users == 0) {
			rados_shutdown(c->cluster);
			free(c->options);
			free(c);
		}
	}
	pthread_mutex_unlock(&clusters_lock);
}

static int rbd_cluster_connect(const struct rbd_name *n, rados_t *out,
			       char *errbuf, size_t errlen)
{
	char timeout[16], value[16];
	rados_t cluster;
	int r;

	/* OpenSSL loads its configuration on the first thread that needs
	 * it and keeps an allocation of that thread's for good.  Let that
	 * be this thread, not a librados thread: the shutdown at exit ends
	 * those, and LeakSanitizer would report the 904 bytes as lost. */
	OPENSSL_init_crypto(OPENSSL_INIT_LOAD_CONFIG, NULL);
	r = rados_create(&cluster, n->id);
	if (r < 0)
		return img_error_buf(errbuf, errlen, r,
				     "cannot set up a Ceph client: %s",
				     strerror(-r));
	r = rados_conf_read_file(cluster, n->conf);
	if (r < 0) {
		img_error_buf(errbuf, errlen, r,
			      "cannot read the Ceph configuration %s: %s",
			      n->conf ? n->conf
				      : "(CEPH_CONF or /etc/ceph/ceph.conf)",
			      strerror(-r));
		goto fail;
	}
	rados_conf_parse_env(cluster, NULL);
	snprintf(timeout, sizeof(timeout), "%d", img_backend_timeout());
	rados_conf_set(cluster, "client_mount_timeout", timeout);
	rados_conf_set(cluster, "rados_mon_op_timeout", timeout);
	rados_conf_set(cluster, "rados_osd_op_timeout", timeout);
	/* No librbd cache: the backend keeps its own writes in flight (each
	 * one's failure comes back at the next write or flush, within the
	 * OSD timeout), where the cache would hide failures until a flush. */
	rados_conf_set(cluster, "rbd_cache", "false");
	/* librbd copies every write unless told not to; the write-behind
	 * buffers are ours and unchanged until their completion, so the
	 * copy only costs time (a page fault per 4 KiB of fresh memory).
	 * With librbd's cache on, the cache keeps the data past the
	 * completion: copy then. */
	rados_conf_set(cluster, "rbd_disable_zero_copy_writes", "false");
	for (int i = 0; i < n->nopt; i++) {
		r = rados_conf_set(cluster, n->key[i], n->value[i]);
		if (r < 0) {
			img_error_buf(errbuf, errlen, r,
				      "Ceph option %s=%s: %s", n->key[i],
				      n->value[i], strerror(-r));
			goto fail;
		}
	}
	if (rados_conf_get(cluster, "rbd_cache", value, sizeof(value)) < 0 ||
	    strcmp(value, "false") != 0)
		rados_conf_set(cluster, "rbd_disable_zero_copy_writes", "true");
	r = rados_connect(cluster);
	if (r < 0) {
		img_error_buf(errbuf, errlen, r,
			      "cannot connect to the Ceph cluster: %s",
			      strerror(-r));
		goto fail;
	}
	*out = cluster;
	return 0;
fail:
	rados_shutdown(cluster);
	return r;
}

static int rbd_cluster_get(const struct rbd_name *n, struct rbd_cluster **out,
			   char *errbuf, size_t errlen)
{
	static bool shutdown_registered;
	struct rbd_cluster *c;
	int r = 0;

	pthread_mutex_lock(&clusters_lock);
	if (!shutdown_registered && atexit(rbd_clusters_shutdown) == 0)
		shutdown_registered = true;
	for (c = clusters; c; c = c->next)
		if (strcmp(c->options, n->options) == 0)
			break;
	if (!c) {
		c = calloc(1, sizeof(*c));
		if (c)
			c->options = strdup(n->options);
		if (!c || !c->options) {
			if (c)
				free(c);
			r = img_error_buf(errbuf, errlen, -ENOMEM,
					  "out of memory");
		} else {
			r = rbd_cluster_connect(n, &c->cluster, errbuf, errlen);
			if (r < 0) {
				free(c->options);
				free(c);
			} else {
				c->next = clusters;
				clusters = c;
			}
		}
	}
	if (r == 0) {
		c->users++;
		*out = c;
	}
	pthread_mutex_unlock(&clusters_lock);
	return r;
}

static void rbd_cluster_put(struct rbd_cluster *c)
{
	pthread_mutex_lock(&clusters_lock);
	c->users--;
	pthread_mutex_unlock(&clusters_lock);
}

static void rbd_disconnect(struct rbd_backend *b)
{
	if (b->have_image)
		rbd_drain(b);
	if (b->have_image)
		rbd_close(b->image);
	if (b->have_io)
		rados_ioctx_destroy(b->io);
	if (b->home)
		rbd_cluster_put(b->home);
	while (b->nspare > 0)
		free(b->spare[--b->nspare]);
	pthread_mutex_destroy(&b->grow_lock);
	pthread_mutex_destroy(&b->behind_lock);
	pthread_mutex_destroy(&b->signal_lock);
	pthread_cond_destroy(&b->behind_done);
	img_extent_cache_destroy(&b->status);
	free(b);
}

/* A backend for name, not connected yet, and the name's parts (n->buf
 * for the caller to free).  rbd_disconnect frees it. */
static int rbd_backend_new(const char *name, struct rbd_backend **out,
			   struct rbd_name *n, char *errbuf, size_t errlen)
{
	struct rbd_backend *b = calloc(1, sizeof(*b));
	int r;

	*out = NULL;
	if (!b)
		return img_error_buf(errbuf, errlen, -ENOMEM, "out of memory");
	pthread_mutex_init(&b->grow_lock, NULL);
	pthread_mutex_init(&b->behind_lock, NULL);
	pthread_mutex_init(&b->signal_lock, NULL);
	pthread_cond_init(&b->behind_done, NULL);
	img_extent_cache_init(&b->status);
	r = rbd_parse(name, n, errbuf, errlen);
	if (r < 0) {
		rbd_disconnect(b);
		return r;
	}
	r = img_dynlib_load(&rbd_library, errbuf, errlen);
	if (r < 0) {
		free(n->buf);
		rbd_disconnect(b);
		return r;
	}
	*out = b;
	return 0;
}

/* The end of an open or create: on success the backend is the file's,
 * on failure it is gone; the name's parts are freed either way. */
static int rbd_opened(struct img_file *f, struct rbd_backend *b,
		      struct rbd_name *n, int r)
{
	free(n->buf);
	if (r < 0) {
		rbd_disconnect(b);
		return r;
	}
	f->backend = b;
	return 0;
}

/* Connect to the cluster and open the pool; the message names what
 * failed. */
static int rbd_connect(struct rbd_backend *b, const struct rbd_name *n,
		       char *errbuf, size_t errlen)
{
	int r;

	r = rbd_cluster_get(n, &b->home, errbuf, errlen);
	if (r < 0)
		return r;
	b->cluster = b->home->cluster;
	r = rados_ioctx_create(b->cluster, n->pool, &b->io);
	if (r < 0)
		return img_error_buf(errbuf, errlen, r, "pool %s: %s", n->pool,
				     strerror(-r));
	b->have_io = true;
	return 0;
}

static int rbd_finish_open(struct rbd_backend *b, char *errbuf, size_t errlen)
{
	rbd_image_info_t info;
	int r;

	r = rbd_stat(b->image, &info, sizeof(info));
	if (r < 0)
		return img_error_buf(errbuf, errlen, r, "rbd_stat: %s",
				     strerror(-r));
	b->size = info.size;
	/* half an object a request: measured on a single bluestore OSD,
	 * 1 GiB in 4 MiB writes (whole objects) took 6.7 s and in 2 MiB
	 * writes 2.6 s (rbd bench, 16 in flight), and imgtool's convert of
	 * a full image into RBD went from 5.4-7.3 s to 3.2 s */
	b->piece = (info.obj_size ? info.obj_size : 4 << 20) / 2;
	return 0;
}

static int rbd_open_name(struct img_file *f, const char *name, bool writable,
			 unsigned flags, char *errbuf, size_t errlen)
{
	struct rbd_backend *b;
	struct rbd_name n;
	int r;

	r = rbd_backend_new(name, &b, &n, errbuf, errlen);
	if (r < 0)
		return r;
	if (writable && n.snap) {
		r = img_error_buf(errbuf, errlen, -EROFS,
				  "snapshot %s is read-only", n.snap);
		goto out;
	}
	r = rbd_connect(b, &n, errbuf, errlen);
	if (r < 0)
		goto out;
	r = writable ? rbd_open(b->io, n.image, &b->image, NULL)
		     : rbd_open_read_only(b->io, n.image, &b->image, n.snap);
	if (r < 0) {
		if (r == -ENOENT && n.snap)
			img_error_buf(
				errbuf, errlen, r,
				"no image %s with a snapshot %s in pool %s",
				n.image, n.snap, n.pool);
		else
			img_error_buf(errbuf, errlen, r,
				      "image %s in pool %s: %s", n.image,
				      n.pool, strerror(-r));
		goto out;
	}
	b->have_image = true;
	r = rbd_finish_open(b, errbuf, errlen);
	if (r < 0)
		goto out;
	/* A second writer would take the lock away at every write: refuse
	 * it, as the local backend's OFD lock does.  Images without the
	 * exclusive-lock feature cannot be locked (-EINVAL): carry on. */
	if (writable && !(flags & IMG_OPEN_NO_LOCK)) {
		r = rbd_lock_acquire(b->image, RBD_LOCK_MODE_EXCLUSIVE);
		if (r < 0 && r != -EINVAL && r != -EOPNOTSUPP) {
			img_error_buf(
				errbuf, errlen, -EBUSY,
				"image is in use by another client (it holds the RBD exclusive lock)");
			r = -EBUSY;
			goto out;
		}
	}
	r = 0;
out:
	return rbd_opened(f, b, &n, r);
}

static int rbd_create_name(struct img_file *f, const char *name, bool excl,
			   char *errbuf, size_t errlen)
{
	struct rbd_backend *b;
	struct rbd_name n;
	int order = 0, r;

	(void)excl; /* an existing image is never replaced */
	r = rbd_backend_new(name, &b, &n, errbuf, errlen);
	if (r < 0)
		return r;
	if (n.snap) {
		r = img_error_buf(errbuf, errlen, -EINVAL,
				  "cannot create a snapshot (%s) as an image",
				  n.snap);
		goto out;
	}
	r = rbd_connect(b, &n, errbuf, errlen);
	if (r < 0)
		goto out;
	/* Created empty: the format's create sets the size it needs. */
	r = rbd_create(b->io, n.image, 0, &order);
	if (r == -EEXIST) {
		img_error_buf(
			errbuf, errlen, r,
			"image %s already exists in pool %s (rbd rm it first)",
			n.image, n.pool);
		goto out;
	}
	if (r < 0) {
		img_error_buf(errbuf, errlen, r,
			      "cannot create image %s in pool %s: %s", n.image,
			      n.pool, strerror(-r));
		goto out;
	}
	r = rbd_open(b->io, n.image, &b->image, NULL);
	if (r < 0) {
		img_error_buf(errbuf, errlen, r, "image %s: %s", n.image,
			      strerror(-r));
		rbd_remove(b->io, n.image);
		goto out;
	}
	b->have_image = true;
	r = rbd_finish_open(b, errbuf, errlen);
out:
	return rbd_opened(f, b, &n, r);
}

static void rbd_backend_close(struct img_file *f)
{
	rbd_disconnect(f->backend);
	f->backend = NULL;
}

static int rbd_remove_name(const char *name, char *errbuf, size_t errlen)
{
	struct rbd_backend *b;
	struct rbd_name n;
	int r;

	r = rbd_backend_new(name, &b, &n, errbuf, errlen);
	if (r < 0)
		return r;
	r = rbd_connect(b, &n, errbuf, errlen);
	if (r == 0) {
		r = rbd_remove(b->io, n.image);
		if (r < 0)
			img_error_buf(errbuf, errlen, r, "rbd remove %s: %s",
				      n.image, strerror(-r));
	}
	free(n.buf);
	rbd_disconnect(b);
	return r;
}

/* ---- data ----------------------------------------------------------------*/

static void rbd_behind_complete(rbd_completion_t c, void *opaque)
{
	struct rbd_backend *b = opaque;

	(void)c;
	pthread_mutex_lock(&b->signal_lock);
	b->completions++;
	pthread_cond_broadcast(&b->behind_done);
	pthread_mutex_unlock(&b->signal_lock);
}

static uint64_t rbd_behind_seen(struct rbd_backend *b)
{
	uint64_t n;

	pthread_mutex_lock(&b->signal_lock);
	n = b->completions;
	pthread_mutex_unlock(&b->signal_lock);
	return n;
}

/* Sleep (behind_lock held, released meanwhile) until a write completes
 * after seen. */
static void rbd_behind_sleep(struct rbd_backend *b, uint64_t seen)
{
	pthread_mutex_unlock(&b->behind_lock);
	pthread_mutex_lock(&b->signal_lock);
	while (b->completions == seen)
		pthread_cond_wait(&b->behind_done, &b->signal_lock);
	pthread_mutex_unlock(&b->signal_lock);
	pthread_mutex_lock(&b->behind_lock);
}

/* A buffer for a write of len bytes (behind_lock held): a piece-sized
 * one from the spares when the write is that large. */
static void *rbd_behind_buffer_get(struct rbd_backend *b, uint64_t len)
{
	if (len < b->piece)
		return malloc(len);
	if (b->nspare > 0)
		return b->spare[--b->nspare];
	return malloc(b->piece);
}

static void rbd_behind_buffer_put(struct rbd_backend *b, void *buf,
				  uint64_t len)
{
	if (len >= b->piece && b->nspare < RBD_MAX_BEHIND)
		b->spare[b->nspare++] = buf;
	else
		free(buf);
}

/* Retire finished writes (behind_lock held), keeping the first error. */
static void rbd_behind_reap(struct rbd_backend *b)
{
	int kept = 0;

	for (int i = 0; i < b->nbehind; i++) {
		struct rbd_write_behind *w = &b->behind[i];

		if (!rbd_aio_is_complete(w->c)) {
			b->behind[kept++] = *w;
			continue;
		}
		int r = (int)rbd_aio_get_return_value(w->c);

		if (r < 0 && !b->behind_error) {
			b->behind_error = r;
			b->behind_error_off = w->off;
		}
		rbd_aio_release(w->c);
		rbd_behind_buffer_put(b, w->buf, w->len);
		b->behind_bytes -= w->len;
	}
	b->nbehind = kept;
}

static bool rbd_behind_overlaps(struct rbd_backend *b, uint64_t off,
				uint64_t len)
{
	for (int i = 0; i < b->nbehind; i++)
		if (b->behind[i].off < off + len &&
		    off < b->behind[i].off + b->behind[i].len)
			return true;
	return false;
}

/* Wait (behind_lock held) until nothing in flight overlaps [off, off+len);
 * len 0: until nothing is in flight. */
static void rbd_behind_wait(struct rbd_backend *b, uint64_t off, uint64_t len)
{
	for (;;) {
		uint64_t seen = rbd_behind_seen(b);

		rbd_behind_reap(b);
		if (b->nbehind == 0 ||
		    (len && !rbd_behind_overlaps(b, off, len)))
			return;
		rbd_behind_sleep(b, seen);
	}
}

static void rbd_drain(struct rbd_backend *b)
{
	pthread_mutex_lock(&b->behind_lock);
	rbd_behind_wait(b, 0, 0);
	pthread_mutex_unlock(&b->behind_lock);
}

/* The kept failure of a write that already returned, once. */
static int rbd_behind_failure(struct img_file *f)
{
	struct rbd_backend *b = f->backend;
	int r = b->behind_error;

	if (!r)
		return 0;
	b->behind_error = 0;
	return img_file_fail(f, r, "write at offset %" PRIu64 ": %s",
			     b->behind_error_off, strerror(-r));
}

/* Copy the iovec and send it in writes of half an object that return at
 * once. */
static int rbd_write_behind(struct img_file *f, const struct iovec *iov,
			    int iovcnt, uint64_t off)
{
	struct rbd_backend *b = f->backend;
	size_t total = img_iov_total(iov, iovcnt), done = 0;
	int r = 0;

	pthread_mutex_lock(&b->behind_lock);
	rbd_behind_wait(b, off, total);
	r = rbd_behind_failure(f);
	while (r == 0 && done < total) {
		uint64_t len = b->piece - (off + done) % b->piece;
		struct rbd_write_behind *w;

		if (len > total - done)
			len = total - done;
		for (;;) {
			uint64_t seen = rbd_behind_seen(b);

			rbd_behind_reap(b);
			if (b->nbehind < RBD_MAX_BEHIND &&
			    (b->nbehind == 0 ||
			     b->behind_bytes + len <= RBD_BEHIND_BYTES))
				break;
			rbd_behind_sleep(b, seen);
		}
		w = &b->behind[b->nbehind];
		w->buf = rbd_behind_buffer_get(b, len);
		if (!w->buf) {
			r = img_file_fail(f, -ENOMEM, "out of memory");
			break;
		}
		img_iov_to_buf(iov, iovcnt, done, w->buf, len);
		w->off = off + done;
		w->len = len;
		r = rbd_aio_create_completion(b, rbd_behind_complete, &w->c);
		if (r == 0) {
			r = rbd_aio_write(b->image, w->off, len, w->buf, w->c);
			if (r < 0)
				rbd_aio_release(w->c);
		}
		if (r < 0) {
			rbd_behind_buffer_put(b, w->buf, len);
			r = img_file_fail(f, r,
					  "write at offset %" PRIu64 ": %s",
					  w->off, strerror(-r));
			break;
		}
		b->nbehind++;
		b->behind_bytes += len;
		done += len;
	}
	pthread_mutex_unlock(&b->behind_lock);
	return r;
}

struct rbd_piece {
	rbd_completion_t c;
	int niov;
	struct iovec iov[RBD_PIECE_IOV];
};

static int rbd_wait_all(struct rbd_piece *p, int n, int r)
{
	for (int i = 0; i < n; i++) {
		int ret;

		rbd_aio_wait_for_complete(p[i].c);
		ret = (int)rbd_aio_get_return_value(p[i].c);
		rbd_aio_release(p[i].c);
		if (ret < 0 && r == 0)
			r = ret;
	}
	return r;
}

/* Read into the iovec from off, half an object per request, up to
 * RBD_MAX_IN_FLIGHT requests at once.  (Writes go out behind, above.) */
static int rbd_read_pieces(struct img_file *f, const struct iovec *iov,
			   int iovcnt, uint64_t off)
{
	struct rbd_backend *b = f->backend;
	struct rbd_piece pieces[RBD_MAX_IN_FLIGHT];
	size_t total = img_iov_total(iov, iovcnt), done = 0;
	int n = 0, r = 0;

	while (done < total && r == 0) {
		struct rbd_piece *p = &pieces[n];
		/* end the piece at a piece boundary (never across objects) */
		uint64_t len = b->piece - (off + done) % b->piece;

		if (len > total - done)
			len = total - done;
		if (iovcnt > RBD_PIECE_IOV) {
			/* too fragmented to slice cheaply: one request (librbd
			 * still spreads it over the objects) */
			r = rbd_aio_create_completion(NULL, NULL, &p->c);
			if (r < 0)
				break;
			r = rbd_aio_readv(b->image, iov, iovcnt, off, p->c);
			len = total;
		} else {
			p->niov = img_iov_slice(iov, iovcnt, done, (size_t)len,
						p->iov, RBD_PIECE_IOV);
			if (p->niov < 0) {
				r = p->niov;
				break;
			}
			r = rbd_aio_create_completion(NULL, NULL, &p->c);
			if (r < 0)
				break;
			r = rbd_aio_readv(b->image, p->iov, p->niov, off + done,
					  p->c);
		}
		if (r < 0) {
			rbd_aio_release(p->c);
			break;
		}
		n++;
		done += len;
		if (n == RBD_MAX_IN_FLIGHT) {
			r = rbd_wait_all(pieces, n, r);
			n = 0;
		}
	}
	r = rbd_wait_all(pieces, n, r);
	if (r < 0)
		return img_file_fail(f, r, "read at offset %" PRIu64 ": %s",
				     off, strerror(-r));
	return 0;
}

static int rbd_preadv(struct img_file *f, const struct iovec *iov, int iovcnt,
		      uint64_t off, bool zero_eof)
{
	struct rbd_backend *b = f->backend;
	size_t total = img_iov_total(iov, iovcnt);

	pthread_mutex_lock(&b->behind_lock);
	rbd_behind_wait(b, off, total ? total : 1);
	pthread_mutex_unlock(&b->behind_lock);
	return img_backend_read_below(f, iov, iovcnt, off,
				      __atomic_load_n(&b->size,
						      __ATOMIC_ACQUIRE),
				      zero_eof, "the image", rbd_read_pieces);
}

static int rbd_grow(struct img_file *f, uint64_t end)
{
	struct rbd_backend *b = f->backend;
	int r = 0;

	if (end <= __atomic_load_n(&b->size, __ATOMIC_ACQUIRE))
		return 0;
	pthread_mutex_lock(&b->grow_lock);
	if (end > b->size) {
		r = rbd_resize(b->image, end);
		if (r == 0)
			__atomic_store_n(&b->size, end, __ATOMIC_RELEASE);
	}
	pthread_mutex_unlock(&b->grow_lock);
	if (r < 0)
		return img_file_fail(f, r, "grow to %" PRIu64 " bytes: %s", end,
				     strerror(-r));
	return 0;
}

static int rbd_pwritev(struct img_file *f, const struct iovec *iov, int iovcnt,
		       uint64_t off)
{
	struct rbd_backend *b = f->backend;
	int r = rbd_grow(f, off + img_iov_total(iov, iovcnt));

	if (r < 0)
		return r;
	img_extent_cache_clear(&b->status);
	return rbd_write_behind(f, iov, iovcnt, off);
}

static int rbd_flush_image(struct img_file *f)
{
	struct rbd_backend *b = f->backend;
	int r;

	if (!f->writable)
		return 0;
	pthread_mutex_lock(&b->behind_lock);
	rbd_behind_wait(b, 0, 0);
	r = rbd_behind_failure(f);
	pthread_mutex_unlock(&b->behind_lock);
	if (r < 0)
		return r;
	r = rbd_flush(b->image);
	if (r < 0)
		return img_file_fail(f, r, "flush: %s", strerror(-r));
	return 0;
}

static int rbd_size(struct img_file *f, uint64_t *size)
{
	struct rbd_backend *b = f->backend;

	*size = __atomic_load_n(&b->size, __ATOMIC_ACQUIRE);
	return 0;
}

static int rbd_truncate(struct img_file *f, uint64_t size)
{
	struct rbd_backend *b = f->backend;
	int r;

	img_extent_cache_clear(&b->status);
	rbd_drain(b);
	pthread_mutex_lock(&b->grow_lock);
	r = rbd_resize(b->image, size);
	if (r == 0)
		__atomic_store_n(&b->size, size, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&b->grow_lock);
	if (r < 0)
		return img_file_fail(f, r, "resize to %" PRIu64 ": %s", size,
				     strerror(-r));
	return 0;
}

static int rbd_one(struct img_file *f, const char *what, bool zero,
		   uint64_t off, uint64_t len)
{
	struct rbd_backend *b = f->backend;
	rbd_completion_t c;
	int r;

	img_extent_cache_clear(&b->status);
	rbd_drain(b);
	r = rbd_aio_create_completion(NULL, NULL, &c);
	if (r == 0) {
		r = zero ? rbd_aio_write_zeroes(b->image, off, (size_t)len, c,
						0, 0)
			 : rbd_aio_discard(b->image, off, len, c);
		if (r == 0) {
			rbd_aio_wait_for_complete(c);
			r = (int)rbd_aio_get_return_value(c);
		}
		rbd_aio_release(c);
	}
	if (r < 0)
		return img_file_fail(f, r, "%s at %" PRIu64 "+%" PRIu64 ": %s",
				     what, off, len, strerror(-r));
	return 0;
}

static int rbd_discard_range(struct img_file *f, uint64_t off, uint64_t len)
{
	return rbd_one(f, "discard", false, off, len);
}

static int rbd_zero_range(struct img_file *f, uint64_t off, uint64_t len)
{
	int r = rbd_grow(f, off + len);

	if (r < 0)
		return r;
	return rbd_one(f, "write zeroes", true, off, len);
}

static int rbd_status_extent(uint64_t off, size_t len, int exists, void *opaque)
{
	struct img_extent_cache *filled = opaque;

	if (!exists || off < filled->end)
		return 0;
	/* the gap before this extent is a hole */
	if (!img_extent_cache_append(filled, off - filled->end, false) ||
	    !img_extent_cache_append(filled, len, true))
		return -ECANCELED; /* full: what is there stays valid */
	return 0;
}

/* An error leaves filled empty: the answer stays "data". */
static int rbd_status_fill(struct img_file *f, uint64_t off, uint64_t window,
			   struct img_extent_cache *filled)
{
	struct rbd_backend *b = f->backend;
	int r;

	rbd_drain(b); /* what was written counts as allocated */
	r = rbd_diff_iterate2(b->image, NULL, off, window, 1, 0,
			      rbd_status_extent, filled);
	/* full (-ECANCELED): what is there stays valid */
	if ((r == 0 && !img_extent_cache_append(
			       filled, off + window - filled->end, false)) ||
	    (r < 0 && r != -ECANCELED))
		filled->n = 0;
	return 0;
}

static int rbd_extent(struct img_file *f, uint64_t off, uint64_t len,
		      bool *is_data, uint64_t *run)
{
	struct rbd_backend *b = f->backend;

	return img_extent_cache_answer(
		f, &b->status, __atomic_load_n(&b->size, __ATOMIC_ACQUIRE),
		RBD_STATUS_WINDOW, rbd_status_fill, off, len, is_data, run);
}

static int rbd_count_used(uint64_t off, size_t len, int exists, void *opaque)
{
	(void)off;
	if (exists)
		*(uint64_t *)opaque += len;
	return 0;
}

/* What `rbd du` reports as used: the objects that exist (from the object
 * map when fast-diff is on), each counted whole. */
static int rbd_allocated(struct img_file *f, uint64_t *bytes)
{
	struct rbd_backend *b = f->backend;
	uint64_t size = __atomic_load_n(&b->size, __ATOMIC_ACQUIRE);
	int r;

	rbd_drain(b);
	*bytes = 0;
	r = rbd_diff_iterate2(b->image, NULL, 0, size, 0, 1, rbd_count_used,
			      bytes);
	return r < 0 ? img_file_fail(f, r, "rbd_diff_iterate2: %s",
				     strerror(-r))
		     : 0;
}

static int rbd_snapshots(struct img_file *f, struct img_backend_snapshot *out,
			 int max)
{
	struct rbd_backend *b = f->backend;
	rbd_snap_info_t *snaps = NULL;
	int n = 16, r;

	for (;;) {
		rbd_snap_info_t *more =
			realloc(snaps, sizeof(*snaps) * (size_t)n);

		if (!more) {
			free(snaps);
			return img_file_fail(f, -ENOMEM, "out of memory");
		}
		snaps = more;
		r = rbd_snap_list(b->image, snaps, &n);
		if (r != -ERANGE)
			break;
	}
	if (r < 0) {
		free(snaps);
		return img_file_fail(f, r, "listing snapshots: %s",
				     strerror(-r));
	}
	for (int i = 0; i < r && i < max; i++) {
		struct timespec ts = { 0 };

		snprintf(out[i].name, sizeof(out[i].name), "%s", snaps[i].name);
		out[i].id = snaps[i].id;
		out[i].size = snaps[i].size;
		if (rbd_snap_get_timestamp(b->image, snaps[i].id, &ts) == 0)
			out[i].created = ts.tv_sec;
		else
			out[i].created = 0;
	}
	rbd_snap_list_end(snaps);
	free(snaps);
	return r;
}

const struct img_file_ops img_backend_rbd = {
	.name = "rbd",
	.open = rbd_open_name,
	.create = rbd_create_name,
	.close = rbd_backend_close,
	.preadv = rbd_preadv,
	.pwritev = rbd_pwritev,
	.flush = rbd_flush_image,
	.size = rbd_size,
	.truncate = rbd_truncate,
	.discard = rbd_discard_range,
	.zero = rbd_zero_range,
	.extent = rbd_extent,
	.list_snapshots = rbd_snapshots,
	.allocated = rbd_allocated,
	.remove = rbd_remove_name,
};
