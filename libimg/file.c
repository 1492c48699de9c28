/* SPDX-License-Identifier: MIT */
/*
 * The img_file calls drivers use, over whichever storage backend the name
 * selects (libimg/backend.h).  Here: choosing the backend, the test I/O
 * hook on every modifying call, the thread's last error, and what every
 * backend shares (zero-filling, fallbacks for what a backend lacks).
 */
#include "backend.h"
#include "internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static img_io_hook_fn io_hook;
static void *io_hook_opaque;
static __thread char last_error[320];

void img_set_io_hook(img_io_hook_fn fn, void *opaque)
{
	io_hook_opaque = opaque;
	__atomic_store_n(&io_hook, fn, __ATOMIC_RELEASE);
}

int img_file_run_io_hook(enum img_io_op op, int fd, uint64_t off, uint64_t len)
{
	img_io_hook_fn fn = __atomic_load_n(&io_hook, __ATOMIC_ACQUIRE);

	return fn ? fn(op, fd, off, len, io_hook_opaque) : 0;
}

const char *img_file_last_error(void)
{
	return last_error;
}

void img_file_clear_last_error(void)
{
	last_error[0] = '\0';
}

int img_file_fail(const struct img_file *f, int err, const char *fmt, ...)
{
	int n;
	va_list ap;

	n = snprintf(last_error, sizeof(last_error),
		     "%s: ", f->path ? f->path : "?");
	if (n < 0 || (size_t)n >= sizeof(last_error))
		return err;
	va_start(ap, fmt);
	vsnprintf(last_error + n, sizeof(last_error) - (size_t)n, fmt, ap);
	va_end(ap);
	return err;
}

int img_backend_timeout(void)
{
	const char *s = getenv("IMG_BACKEND_TIMEOUT");
	int t = s ? atoi(s) : 0;

	return t > 0 ? t : 30;
}

/* ---- allocation learnt from a remote backend ----------------------------*/

void img_extent_cache_init(struct img_extent_cache *c)
{
	pthread_mutex_init(&c->lock, NULL);
	c->start = c->end = 0;
	c->n = 0;
}

void img_extent_cache_destroy(struct img_extent_cache *c)
{
	pthread_mutex_destroy(&c->lock);
}

void img_extent_cache_clear(struct img_extent_cache *c)
{
	pthread_mutex_lock(&c->lock);
	c->start = c->end = 0;
	c->n = 0;
	c->generation++;
	pthread_mutex_unlock(&c->lock);
}

uint64_t img_extent_cache_generation(struct img_extent_cache *c)
{
	uint64_t g;

	pthread_mutex_lock(&c->lock);
	g = c->generation;
	pthread_mutex_unlock(&c->lock);
	return g;
}

void img_extent_cache_install(struct img_extent_cache *c,
			      const struct img_extent_cache *filled,
			      uint64_t generation)
{
	pthread_mutex_lock(&c->lock);
	if (c->generation == generation) {
		c->start = filled->start;
		c->end = filled->end;
		c->n = filled->n;
		memcpy(c->e, filled->e, sizeof(c->e[0]) * (size_t)filled->n);
	}
	pthread_mutex_unlock(&c->lock);
}

void img_extent_cache_begin(struct img_extent_cache *c, uint64_t off)
{
	c->start = c->end = off;
	c->n = 0;
}

bool img_extent_cache_append(struct img_extent_cache *c, uint64_t len,
			     bool data)
{
	if (len == 0)
		return true;
	if (c->n > 0 && c->e[c->n - 1].data == data) {
		c->e[c->n - 1].len += len;
	} else {
		if (c->n == IMG_EXTENT_CACHE_MAX)
			return false;
		c->e[c->n].off = c->end;
		c->e[c->n].len = len;
		c->e[c->n].data = data;
		c->n++;
	}
	c->end += len;
	return true;
}

bool img_extent_cache_lookup(struct img_extent_cache *c, uint64_t off,
			     uint64_t len, bool *is_data, uint64_t *run)
{
	bool found = false;
	int lo = 0, hi;

	pthread_mutex_lock(&c->lock);
	hi = c->n - 1;
	if (off < c->start || off >= c->end || c->n == 0)
		goto out;
	while (lo < hi) { /* the last entry starting at or before off */
		int mid = (lo + hi + 1) / 2;

		if (c->e[mid].off <= off)
			lo = mid;
		else
			hi = mid - 1;
	}
	*is_data = c->e[lo].data;
	*run = c->e[lo].off + c->e[lo].len - off;
	if (*run > len)
		*run = len;
	found = true;
out:
	pthread_mutex_unlock(&c->lock);
	return found;
}

int img_extent_cache_answer(struct img_file *f, struct img_extent_cache *c,
			    uint64_t size, uint64_t window_max,
			    img_extent_fill_fn fill, uint64_t off, uint64_t len,
			    bool *is_data, uint64_t *run)
{
	struct img_extent_cache *filled;
	uint64_t window, generation;
	int r;

	if (off >= size)
		return 0;
	if (len > size - off)
		len = size - off;
	if (img_extent_cache_lookup(c, off, len, is_data, run))
		return 0;
	/* Ask about a whole window: the answers for the runs after this
	 * one come with the same request. */
	window = size - off < window_max ? size - off : window_max;
	filled = malloc(sizeof(*filled));
	if (!filled)
		return 0; /* cannot tell: data */
	img_extent_cache_begin(filled, off);
	generation = img_extent_cache_generation(c);
	r = fill(f, off, window, filled);
	if (r == 0 && filled->n > 0) {
		img_extent_cache_install(c, filled, generation);
		*is_data = filled->e[0].data;
		*run = filled->e[0].len < len ? filled->e[0].len : len;
	}
	free(filled);
	return r;
}

int img_backend_read_below(struct img_file *f, const struct iovec *iov,
			   int iovcnt, uint64_t off, uint64_t size,
			   bool zero_eof, const char *what,
			   img_backend_read_fn read)
{
	size_t total = img_iov_total(iov, iovcnt), inside;
	struct iovec part[64];
	int n;

	if (off + total <= size)
		return read(f, iov, iovcnt, off);
	if (!zero_eof)
		return img_file_fail(f, -EIO,
				     "unexpected end of %s at offset %" PRIu64,
				     what, off >= size ? off : size);
	inside = off >= size ? 0 : (size_t)(size - off);
	img_iov_memset(iov, iovcnt, inside, 0, total - inside);
	if (inside == 0)
		return 0;
	n = img_iov_slice(iov, iovcnt, 0, inside, part, 64);
	if (n < 0)
		return img_file_fail(f, n, "read: too many buffers");
	return read(f, part, n, off);
}

/* ---- choosing a backend --------------------------------------------------*/

static bool has_prefix(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

const struct img_file_ops *img_backend_for(const char *name)
{
	if (has_prefix(name, "nbd://") || has_prefix(name, "nbd+unix://") ||
	    has_prefix(name, "nbds://") || has_prefix(name, "nbds+unix://"))
		return &img_backend_nbd;
	if (has_prefix(name, "rbd:"))
		return &img_backend_rbd;
	if (has_prefix(name, "http://") || has_prefix(name, "https://"))
		return &img_backend_http;
	return &img_backend_file;
}

bool img_name_is_local(const char *name)
{
	return img_backend_for(name) == &img_backend_file;
}

/* ---- open, create, close -------------------------------------------------*/

/* The remote objects open in this process, so that a question about one
 * by name (img_file_allocated_name) goes over the connection already
 * made: an NBD server may take one client only.  Entries point at the
 * backend's own state, which stays where it is while the handle is
 * open. */
static pthread_mutex_t remote_lock = PTHREAD_MUTEX_INITIALIZER;
static struct remote_open {
	char *name;
	const struct img_file_ops *ops;
	void *backend;
	struct remote_open *next;
} * remote_opens;

static void remote_add(const struct img_file *f)
{
	struct remote_open *r;

	if (f->ops == &img_backend_file || !f->ops->allocated)
		return;
	r = calloc(1, sizeof(*r));
	if (!r)
		return; /* only a question by name then opens it again */
	r->name = strdup(f->path);
	if (!r->name) {
		free(r);
		return;
	}
	r->ops = f->ops;
	r->backend = f->backend;
	pthread_mutex_lock(&remote_lock);
	r->next = remote_opens;
	remote_opens = r;
	pthread_mutex_unlock(&remote_lock);
}

static void remote_remove(const struct img_file *f)
{
	struct remote_open **p, *r;

	if (f->ops == &img_backend_file || !f->ops->allocated)
		return;
	pthread_mutex_lock(&remote_lock);
	for (p = &remote_opens; *p; p = &(*p)->next) {
		if ((*p)->backend == f->backend) {
			r = *p;
			*p = r->next;
			free(r->name);
			free(r);
			break;
		}
	}
	pthread_mutex_unlock(&remote_lock);
}

static void file_reset(struct img_file *f)
{
	memset(f, 0, sizeof(*f));
	f->fd = -1;
	f->direct_fd = -1;
}

int img_file_open_name(struct img_file *f, const char *name, bool writable,
		       unsigned flags, char *errbuf, size_t errlen)
{
	const struct img_file_ops *ops = img_backend_for(name);
	int r;

	file_reset(f);
	if (writable && !ops->pwritev)
		return img_error_buf(errbuf, errlen, -EROFS,
				     "the %s backend is read-only", ops->name);
	f->path = strdup(name);
	if (!f->path)
		return img_error_buf(errbuf, errlen, -ENOMEM, "out of memory");
	f->writable = writable;
	r = ops->open(f, name, writable, flags, errbuf, errlen);
	if (r < 0) {
		free(f->path);
		file_reset(f);
		return r;
	}
	f->ops = ops;
	remote_add(f);
	return 0;
}

int img_file_open(struct img *img, struct img_file *f, const char *path,
		  bool writable)
{
	char msg[IMG_ERRMSG_MAX];
	int r;

	r = img_file_open_name(f, path, writable, img ? img_open_flags(img) : 0,
			       msg, sizeof(msg));
	if (r < 0 && img) {
		if (strcmp(path, img_filename(img)) == 0)
			return img_error(img, r, "%s", msg);
		return img_error(img, r, "%s: %s", path, msg);
	}
	return r;
}

int img_file_open_image(struct img *img, struct img_file *f, const char *format,
			uint64_t min_size, uint64_t *size)
{
	int r = img_file_open(img, f, img_filename(img),
			      img_open_flags(img) & IMG_OPEN_RDWR);

	if (r < 0)
		return r;
	r = img_file_size(f, size);
	if (r == 0 && *size < min_size)
		r = img_error(img, -EINVAL,
			      "file too small for a %s (%llu bytes)", format,
			      (unsigned long long)*size);
	if (r < 0)
		img_file_close(f);
	return r;
}

int img_file_create(struct img_file *f, const char *path, bool excl,
		    char *errbuf, size_t errlen)
{
	const struct img_file_ops *ops = img_backend_for(path);
	char msg[IMG_ERRMSG_MAX];
	int r;

	file_reset(f);
	if (!ops->create)
		return img_error_buf(errbuf, errlen, -ENOTSUP,
				     "%s: the %s backend cannot create images",
				     path, ops->name);
	f->path = strdup(path);
	if (!f->path)
		return img_error_buf(errbuf, errlen, -ENOMEM,
				     "%s: out of memory", path);
	f->writable = true;
	r = ops->create(f, path, excl, msg, sizeof(msg));
	if (r < 0) {
		free(f->path);
		file_reset(f);
		return img_error_buf(errbuf, errlen, r, "%s: %s", path, msg);
	}
	f->ops = ops;
	remote_add(f);
	return 0;
}

void img_file_close(struct img_file *f)
{
	if (f->ops) {
		remote_remove(f);
		f->ops->close(f);
	}
	free(f->path);
	file_reset(f);
}

bool img_file_is_open(const struct img_file *f)
{
	return f->ops != NULL;
}

int img_file_remove_name(const char *name, char *errbuf, size_t errlen)
{
	const struct img_file_ops *ops = img_backend_for(name);

	if (!ops->remove)
		return -ENOTSUP;
	return ops->remove(name, errbuf, errlen);
}

int img_file_allocated_name(const char *name, uint64_t *bytes)
{
	const struct img_file_ops *ops = img_backend_for(name);
	struct img_file f;
	struct remote_open *r;
	char msg[IMG_ERRMSG_MAX];
	int ret;

	*bytes = 0;
	if (ops == &img_backend_file) {
		struct stat st;

		/* a file that is not there (yet) holds nothing */
		if (stat(name, &st) == 0)
			*bytes = (uint64_t)st.st_blocks * 512;
		return 0;
	}
	if (!ops->allocated)
		return -ENOTSUP;
	{
		pthread_mutex_lock(&remote_lock);
		for (r = remote_opens; r; r = r->next)
			if (strcmp(r->name, name) == 0)
				break;
		if (r) {
			/* under the lock: the handle cannot close meanwhile */
			file_reset(&f);
			f.path = r->name;
			f.ops = r->ops;
			f.backend = r->backend;
			ret = r->ops->allocated(&f, bytes);
			pthread_mutex_unlock(&remote_lock);
			return ret;
		}
		pthread_mutex_unlock(&remote_lock);
	}
	ret = img_file_open_name(&f, name, false, IMG_OPEN_NO_LOCK, msg,
				 sizeof(msg));
	if (ret < 0)
		return ret;
	ret = ops->allocated(&f, bytes);
	img_file_close(&f);
	return ret;
}

int img_remove(const char *name, char *errbuf, size_t errlen)
{
	char msg[IMG_ERRMSG_MAX] = "";
	int r = img_file_remove_name(name, msg, sizeof(msg));

	if (r == -ENOTSUP)
		return img_error_buf(errbuf, errlen, r,
				     "%s: the %s backend cannot remove it",
				     name, img_backend_for(name)->name);
	if (r < 0)
		return img_error_buf(errbuf, errlen, r, "%s: %s", name,
				     msg[0] ? msg : strerror(-r));
	return 0;
}

int img_backend_snapshots(const char *name, struct img_backend_snapshot *out,
			  int max, char *errbuf, size_t errlen)
{
	const struct img_file_ops *ops = img_backend_for(name);
	struct img_file f;
	char msg[IMG_ERRMSG_MAX];
	int r;

	if (!ops->list_snapshots)
		return img_error_buf(errbuf, errlen, -ENOTSUP,
				     "%s: the %s backend keeps no snapshots",
				     name, ops->name);
	r = img_file_open_name(&f, name, false, IMG_OPEN_NO_LOCK, msg,
			       sizeof(msg));
	if (r < 0)
		return img_error_buf(errbuf, errlen, r, "%s: %s", name, msg);
	img_file_clear_last_error();
	r = ops->list_snapshots(&f, out, max);
	if (r < 0)
		img_error_buf(errbuf, errlen, r, "%s",
			      last_error[0] ? last_error : strerror(-r));
	img_file_close(&f);
	return r;
}

/* ---- data ----------------------------------------------------------------*/

static int not_open(const struct img_file *f)
{
	return img_file_fail(f, -EBADF, "not open");
}

int img_file_preadv(struct img_file *f, const struct iovec *iov, int iovcnt,
		    uint64_t off)
{
	if (!f->ops)
		return not_open(f);
	return f->ops->preadv(f, iov, iovcnt, off, false);
}

int img_file_pwritev(struct img_file *f, const struct iovec *iov, int iovcnt,
		     uint64_t off)
{
	int r;

	if (!f->ops)
		return not_open(f);
	r = img_file_run_io_hook(IMG_IO_WRITE, f->fd, off,
				 img_iov_total(iov, iovcnt));
	if (r < 0)
		return img_file_fail(f, r, "write at offset %" PRIu64 ": %s",
				     off, strerror(-r));
	if (!f->writable || !f->ops->pwritev)
		return img_file_fail(f, -EROFS,
				     "write at offset %" PRIu64
				     ": opened read-only",
				     off);
	return f->ops->pwritev(f, iov, iovcnt, off);
}

int img_file_pread(struct img_file *f, void *buf, size_t len, uint64_t off)
{
	struct iovec iov = { .iov_base = buf, .iov_len = len };

	return img_file_preadv(f, &iov, 1, off);
}

int img_file_pread_zero_eof(struct img_file *f, void *buf, size_t len,
			    uint64_t off)
{
	struct iovec iov = { .iov_base = buf, .iov_len = len };

	if (!f->ops)
		return not_open(f);
	return f->ops->preadv(f, &iov, 1, off, true);
}

int img_file_pwrite(struct img_file *f, const void *buf, size_t len,
		    uint64_t off)
{
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };

	return img_file_pwritev(f, &iov, 1, off);
}

int img_file_sync(struct img_file *f)
{
	int r;

	if (!f->ops)
		return not_open(f);
	r = img_file_run_io_hook(IMG_IO_SYNC, f->fd, 0, 0);
	if (r < 0)
		return img_file_fail(f, r, "sync: %s", strerror(-r));
	if (!f->ops->flush)
		return 0;
	return f->ops->flush(f);
}

int img_file_truncate(struct img_file *f, uint64_t size)
{
	int r;

	if (!f->ops)
		return not_open(f);
	r = img_file_run_io_hook(IMG_IO_TRUNCATE, f->fd, size, 0);
	if (r < 0)
		return img_file_fail(f, r, "truncate: %s", strerror(-r));
	if (!f->ops->truncate)
		return img_file_fail(f, -ENOTSUP,
				     "the %s backend cannot change the size",
				     f->ops->name);
	return f->ops->truncate(f, size);
}

int img_file_punch_hole(struct img_file *f, uint64_t off, uint64_t len)
{
	int r;

	if (len == 0)
		return 0;
	if (!f->ops)
		return not_open(f);
	r = img_file_run_io_hook(IMG_IO_ALLOCATE, f->fd, off, len);
	if (r < 0)
		return img_file_fail(f, r,
				     "punch hole at %" PRIu64 "+%" PRIu64
				     ": %s",
				     off, len, strerror(-r));
	if (!f->ops->discard)
		return -EOPNOTSUPP;
	return f->ops->discard(f, off, len);
}

/* Shared read-only source of zeros for writes that must store them. */
const char img_zero_block[IMG_ZERO_BLOCK_SIZE];

int img_file_write_zero_buffers(struct img_file *f, uint64_t off, uint64_t len)
{
	enum { NIOV = 16 };
	struct iovec iov[NIOV];
	int r;

	while (len) {
		uint64_t chunk = 0;
		int n = 0;

		while (n < NIOV && chunk < len) {
			size_t l = sizeof(img_zero_block);

			if (l > len - chunk)
				l = (size_t)(len - chunk);
			iov[n].iov_base = (void *)img_zero_block;
			iov[n].iov_len = l;
			chunk += l;
			n++;
		}
		r = img_file_pwritev(f, iov, n, off);
		if (r < 0)
			return r;
		off += chunk;
		len -= chunk;
	}
	return 0;
}

int img_file_zero_range(struct img_file *f, uint64_t off, uint64_t len)
{
	int r;

	if (len == 0)
		return 0;
	if (!f->ops)
		return not_open(f);
	if (f->ops->zero) {
		r = img_file_run_io_hook(IMG_IO_ALLOCATE, f->fd, off, len);
		if (r < 0)
			return img_file_fail(f, r,
					     "zero range at %" PRIu64
					     "+%" PRIu64 ": %s",
					     off, len, strerror(-r));
		r = f->ops->zero(f, off, len);
		if (r != -EOPNOTSUPP)
			return r;
	}
	return img_file_write_zero_buffers(f, off, len);
}

int img_file_size(struct img_file *f, uint64_t *size)
{
	if (!f->ops)
		return not_open(f);
	return f->ops->size(f, size);
}

int img_file_extent(struct img_file *f, uint64_t off, uint64_t len,
		    bool *is_data, uint64_t *run)
{
	*is_data = true;
	*run = len;
	if (len == 0 || !f->ops || !f->ops->extent)
		return 0;
	return f->ops->extent(f, off, len, is_data, run);
}
