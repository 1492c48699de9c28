/* SPDX-License-Identifier: MIT */
/*
 * The NBD backend: nbd://host[:port]/export, nbd+unix:///export?socket=PATH
 * (and nbds:// with TLS) through libnbd.
 *
 * Structured replies and the base:allocation context are asked for, so
 * block status tells holes from data and converts from NBD stay sparse.
 * When the server offers multi-conn, several connections carry requests in
 * parallel; on each, the requests of several threads are in flight
 * together, a request's pieces go out together as asynchronous commands.  Every wait is
 * bounded: a server that sends nothing for img_backend_timeout() seconds,
 * or that goes away, fails the request with one line and the connection is
 * not used again.
 */
#include "backend.h"
#include "dynlib.h"
#include "internal.h"

#include <inttypes.h>
#include <libnbd.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

/* libnbd is loaded by the first nbd:// name (dynlib.h). */
#define NBD_FUNCTIONS(X)                      \
	X(nbd_add_meta_context)               \
	X(nbd_aio_block_status)               \
	X(nbd_aio_command_completed)          \
	X(nbd_aio_connect_uri)                \
	X(nbd_aio_flush)                      \
	X(nbd_aio_get_direction)              \
	X(nbd_aio_get_fd)                     \
	X(nbd_aio_in_flight)                  \
	X(nbd_aio_is_closed)                  \
	X(nbd_aio_is_connecting)              \
	X(nbd_aio_is_dead)                    \
	X(nbd_aio_is_processing)              \
	X(nbd_aio_is_ready)                   \
	X(nbd_aio_notify_read)                \
	X(nbd_aio_notify_write)               \
	X(nbd_aio_pread)                      \
	X(nbd_aio_pwrite)                     \
	X(nbd_aio_trim)                       \
	X(nbd_aio_zero)                       \
	X(nbd_can_flush)                      \
	X(nbd_can_meta_context)               \
	X(nbd_can_multi_conn)                 \
	X(nbd_can_trim)                       \
	X(nbd_can_zero)                       \
	X(nbd_close)                          \
	X(nbd_create)                         \
	X(nbd_get_block_size)                 \
	X(nbd_get_errno)                      \
	X(nbd_get_error)                      \
	X(nbd_get_size)                       \
	X(nbd_is_read_only)                   \
	X(nbd_poll)                           \
	X(nbd_set_handle_name)                \
	X(nbd_set_request_structured_replies) \
	X(nbd_set_uri_allow_local_file)       \
	X(nbd_shutdown)
IMG_DYNLIB_DEFINE(nbd, NBD_FUNCTIONS, "libnbd.so.0", "libnbd0");
#define nbd_add_meta_context nbd_lib.nbd_add_meta_context
#define nbd_aio_block_status nbd_lib.nbd_aio_block_status
#define nbd_aio_command_completed nbd_lib.nbd_aio_command_completed
#define nbd_aio_connect_uri nbd_lib.nbd_aio_connect_uri
#define nbd_aio_flush nbd_lib.nbd_aio_flush
#define nbd_aio_get_direction nbd_lib.nbd_aio_get_direction
#define nbd_aio_get_fd nbd_lib.nbd_aio_get_fd
#define nbd_aio_in_flight nbd_lib.nbd_aio_in_flight
#define nbd_aio_is_closed nbd_lib.nbd_aio_is_closed
#define nbd_aio_is_connecting nbd_lib.nbd_aio_is_connecting
#define nbd_aio_is_dead nbd_lib.nbd_aio_is_dead
#define nbd_aio_is_processing nbd_lib.nbd_aio_is_processing
#define nbd_aio_is_ready nbd_lib.nbd_aio_is_ready
#define nbd_aio_notify_read nbd_lib.nbd_aio_notify_read
#define nbd_aio_notify_write nbd_lib.nbd_aio_notify_write
#define nbd_aio_pread nbd_lib.nbd_aio_pread
#define nbd_aio_pwrite nbd_lib.nbd_aio_pwrite
#define nbd_aio_trim nbd_lib.nbd_aio_trim
#define nbd_aio_zero nbd_lib.nbd_aio_zero
#define nbd_can_flush nbd_lib.nbd_can_flush
#define nbd_can_meta_context nbd_lib.nbd_can_meta_context
#define nbd_can_multi_conn nbd_lib.nbd_can_multi_conn
#define nbd_can_trim nbd_lib.nbd_can_trim
#define nbd_can_zero nbd_lib.nbd_can_zero
#define nbd_close nbd_lib.nbd_close
#define nbd_create nbd_lib.nbd_create
#define nbd_get_block_size nbd_lib.nbd_get_block_size
#define nbd_get_errno nbd_lib.nbd_get_errno
#define nbd_get_error nbd_lib.nbd_get_error
#define nbd_get_size nbd_lib.nbd_get_size
#define nbd_is_read_only nbd_lib.nbd_is_read_only
#define nbd_poll nbd_lib.nbd_poll
#define nbd_set_handle_name nbd_lib.nbd_set_handle_name
#define nbd_set_request_structured_replies \
	nbd_lib.nbd_set_request_structured_replies
#define nbd_set_uri_allow_local_file nbd_lib.nbd_set_uri_allow_local_file
#define nbd_shutdown nbd_lib.nbd_shutdown

enum {
	NBD_MAX_CONNECTIONS = 4,
	NBD_PIECE = 4 << 20, /* bytes a command carries at most */
	NBD_MAX_IN_FLIGHT = 16,
	/* block status asks for at most this much at once */
	NBD_STATUS_MAX = 1u << 30,
};

/* Requests of several threads share a connection: each issues its own
 * asynchronous commands; whoever holds lock runs the socket (nbd_poll_once)
 * for all of them, and each checks its own commands' completion. */
struct nbd_connection {
	pthread_mutex_t lock;
	struct nbd_handle *h;
	int wake; /* eventfd: a command waits to be sent */
	bool dead;
	int64_t last_progress; /* ms, when the server last sent anything */
};

struct nbd_backend {
	int nconn;
	unsigned next; /* round robin */
	uint64_t size;
	uint32_t piece;
	bool can_flush, can_trim, can_zero, have_allocation;
	struct nbd_connection conn[NBD_MAX_CONNECTIONS];
	struct img_extent_cache status;
};

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* libnbd's message without its "nbd_xxx: " function prefix. */
static const char *nbd_message(void)
{
	const char *m = nbd_get_error();
	const char *colon;

	if (!m)
		return "unknown error";
	colon = strstr(m, ": ");
	if (colon && strncmp(m, "nbd_", 4) == 0)
		return colon + 2;
	return m;
}

static int nbd_errno(int fallback)
{
	int e = nbd_get_errno();

	return e > 0 ? -e : fallback;
}

/* The message for a command that could not be issued or failed: a lost
 * connection says so rather than in libnbd's state-machine terms. */
static int nbd_failure(struct nbd_connection *c, char *errbuf, size_t errlen)
{
	if (nbd_aio_is_dead(c->h) || nbd_aio_is_closed(c->h)) {
		c->dead = true;
		return img_error_buf(errbuf, errlen, -ECONNRESET,
				     "the connection to the server was lost");
	}
	return img_error_buf(errbuf, errlen, nbd_errno(-EIO), "%s",
			     nbd_message());
}

/* After a command was issued: when libnbd could not send all of it at once
 * the thread in poll(2) must wait for the socket to take more. */
static void nbd_kick(struct nbd_connection *c)
{
	uint64_t one = 1;

	if (nbd_aio_get_direction(c->h) & LIBNBD_AIO_DIRECTION_WRITE)
		(void)!write(c->wake, &one, sizeof(one));
}

/* One wait on the connection's socket.  libnbd's nbd_poll keeps the
 * handle's lock during poll(2), which stops every other thread from issuing
 * or completing commands for as long as the server is silent: the requests
 * on a connection would go out one server round trip apart.  This polls
 * without that lock and lets libnbd's lock guard only the state machine's
 * steps.  Only a connection that dies while we poll closes the socket under
 * us: poll(2) then reports it invalid or sees the slice end, and the
 * handle's dead state is what counts.  1: progress;
 * 0: nothing (timeout, a wake-up, or a direction gone stale meanwhile);
 * -1: the connection is lost. */
static int nbd_poll_once(struct nbd_connection *c, int timeout)
{
	struct pollfd p[2] = { { .fd = (int)nbd_aio_get_fd(c->h) },
			       { .fd = c->wake, .events = POLLIN } };
	unsigned dir = nbd_aio_get_direction(c->h);
	int r;

	if (p[0].fd < 0)
		return -1;
	if (dir & LIBNBD_AIO_DIRECTION_READ)
		p[0].events |= POLLIN;
	if (dir & LIBNBD_AIO_DIRECTION_WRITE)
		p[0].events |= POLLOUT;
	r = poll(p, 2, timeout);
	if (r < 0)
		return errno == EINTR ? 0 : -1;
	if (p[1].revents & POLLIN) {
		uint64_t v;

		(void)!read(c->wake, &v, sizeof(v));
	}
	if (p[0].revents & POLLNVAL)
		return -1;
	if (p[0].revents & (POLLIN | POLLHUP | POLLERR))
		r = nbd_aio_notify_read(c->h);
	else if (p[0].revents & POLLOUT)
		r = nbd_aio_notify_write(c->h);
	else
		return 0;
	if (r == 0)
		return 1;
	if (nbd_aio_is_dead(c->h) || nbd_aio_is_closed(c->h) ||
	    (p[0].revents & (POLLHUP | POLLERR)))
		return -1;
	return 0;
}

/* Run the connection until every cookie has completed, the server goes
 * away or stays silent for the timeout.  0 or -errno with the message in
 * errbuf. */
/* Retires the cookies that have completed (set to -1); returns how many. */
static int nbd_retire(struct nbd_connection *c, int64_t *cookies, int n,
		      int *first_error, char *errbuf, size_t errlen)
{
	int done = 0;

	for (int i = 0; i < n; i++) {
		int r;

		if (cookies[i] < 0)
			continue;
		r = nbd_aio_command_completed(c->h, (uint64_t)cookies[i]);
		if (r == 0)
			continue;
		cookies[i] = -1;
		done++;
		if (r < 0 && !*first_error)
			*first_error = nbd_failure(c, errbuf, errlen);
	}
	return done;
}

static int nbd_wait(struct nbd_connection *c, int64_t *cookies, int n,
		    char *errbuf, size_t errlen)
{
	int timeout = img_backend_timeout() * 1000, first_error = 0, left = n;

	nbd_kick(c);
	for (;;) {
		int r;

		left -= nbd_retire(c, cookies, n, &first_error, errbuf, errlen);
		if (left == 0)
			return first_error;
		if (c->dead || nbd_aio_is_dead(c->h) ||
		    nbd_aio_is_closed(c->h)) {
			c->dead = true;
			return first_error
				       ? first_error
				       : img_error_buf(
						 errbuf, errlen, -ECONNRESET,
						 "the connection to the server was lost");
		}
		pthread_mutex_lock(&c->lock);
		/* the previous holder may have read our answers meanwhile */
		r = nbd_retire(c, cookies, n, &first_error, errbuf, errlen);
		if (r > 0) {
			pthread_mutex_unlock(&c->lock);
			left -= r;
			continue;
		}
		/* a short slice: the others waiting for the lock may have
		 * their answers already */
		r = nbd_poll_once(c, 20);
		if (r > 0)
			__atomic_store_n(&c->last_progress, now_ms(),
					 __ATOMIC_RELAXED);
		pthread_mutex_unlock(&c->lock);
		if (r < 0) {
			c->dead = true;
			if (first_error)
				return first_error;
			return img_error_buf(errbuf, errlen,
					     nbd_errno(-ECONNRESET),
					     "the server went away: %s",
					     nbd_message());
		}
		if (r == 0 && now_ms() - __atomic_load_n(&c->last_progress,
							 __ATOMIC_RELAXED) >=
				      timeout) {
			c->dead = true;
			return img_error_buf(
				errbuf, errlen, -ETIMEDOUT,
				"no answer from the server for %d s",
				timeout / 1000);
		}
	}
}

static int nbd_connect_one(struct nbd_connection *c, const char *uri,
			   char *errbuf, size_t errlen)
{
	int timeout = img_backend_timeout() * 1000;
	int64_t deadline;

	pthread_mutex_init(&c->lock, NULL);
	c->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (c->wake < 0)
		return img_error_buf(errbuf, errlen, -errno, "eventfd: %s",
				     strerror(errno));
	c->h = nbd_create();
	if (!c->h) {
		close(c->wake);
		return img_error_buf(errbuf, errlen, -ENOMEM, "%s",
				     nbd_message());
	}
	nbd_set_handle_name(c->h, "imgtool");
	/* nbds:// names may carry tls-certificates=DIR or tls-psk-file=FILE.
	 * libnbd refuses local files in URIs unless told, for URIs from
	 * strangers; ours come from the user or from a backing-file name,
	 * which may name any local file as a path anyway. */
	nbd_set_uri_allow_local_file(c->h, true);
	if (nbd_add_meta_context(c->h, LIBNBD_CONTEXT_BASE_ALLOCATION) < 0 ||
	    nbd_set_request_structured_replies(c->h, true) < 0 ||
	    nbd_aio_connect_uri(c->h, uri) < 0)
		return img_error_buf(errbuf, errlen, nbd_errno(-EINVAL), "%s",
				     nbd_message());
	deadline = now_ms() + timeout;
	while (nbd_aio_is_connecting(c->h)) {
		int64_t left = deadline - now_ms();
		int r;

		if (left <= 0)
			return img_error_buf(
				errbuf, errlen, -ETIMEDOUT,
				"no answer from the server for %d s",
				timeout / 1000);
		r = nbd_poll(c->h, (int)left);
		if (r < 0)
			return img_error_buf(errbuf, errlen,
					     nbd_errno(-ECONNREFUSED), "%s",
					     nbd_message());
	}
	if (!nbd_aio_is_ready(c->h))
		return img_error_buf(errbuf, errlen, nbd_errno(-ECONNREFUSED),
				     "%s", nbd_message());
	return 0;
}

static void nbd_backend_free(struct nbd_backend *b)
{
	img_extent_cache_destroy(&b->status);
	for (int i = 0; i < NBD_MAX_CONNECTIONS; i++) {
		if (b->conn[i].h) {
			if (!b->conn[i].dead && nbd_aio_is_ready(b->conn[i].h))
				nbd_shutdown(b->conn[i].h, 0);
			nbd_close(b->conn[i].h);
			close(b->conn[i].wake);
			pthread_mutex_destroy(&b->conn[i].lock);
		}
	}
	free(b);
}

static int nbd_open(struct img_file *f, const char *uri, bool writable,
		    unsigned flags, char *errbuf, size_t errlen)
{
	struct nbd_backend *b;
	struct nbd_handle *h;
	int64_t size, max;
	int r, want;

	(void)flags;
	r = img_dynlib_load(&nbd_library, errbuf, errlen);
	if (r < 0)
		return r;
	b = calloc(1, sizeof(*b));
	if (!b)
		return img_error_buf(errbuf, errlen, -ENOMEM, "out of memory");
	img_extent_cache_init(&b->status);
	r = nbd_connect_one(&b->conn[0], uri, errbuf, errlen);
	if (r < 0)
		goto fail;
	b->nconn = 1;
	h = b->conn[0].h;
	size = nbd_get_size(h);
	if (size < 0) {
		r = img_error_buf(errbuf, errlen, nbd_errno(-EIO), "%s",
				  nbd_message());
		goto fail;
	}
	b->size = (uint64_t)size;
	if (writable && nbd_is_read_only(h) == 1) {
		r = img_error_buf(errbuf, errlen, -EROFS,
				  "the server exports it read-only");
		goto fail;
	}
	b->can_flush = nbd_can_flush(h) == 1;
	b->can_trim = nbd_can_trim(h) == 1;
	b->can_zero = nbd_can_zero(h) == 1;
	b->have_allocation =
		nbd_can_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION) == 1;
	b->piece = NBD_PIECE;
	max = nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM);
	if (max > 0 && max < b->piece)
		b->piece = (uint32_t)max;
	/* Without multi-conn the server may not keep several clients'
	 * caches coherent: one connection then. */
	want = nbd_can_multi_conn(h) == 1 ? NBD_MAX_CONNECTIONS : 1;
	for (int i = 1; i < want; i++) {
		char ignored[IMG_ERRMSG_MAX];

		if (nbd_connect_one(&b->conn[i], uri, ignored,
				    sizeof(ignored)) < 0) {
			nbd_close(b->conn[i].h);
			b->conn[i].h = NULL;
			close(b->conn[i].wake);
			pthread_mutex_destroy(&b->conn[i].lock);
			break;
		}
		b->nconn++;
	}
	f->backend = b;
	return 0;
fail:
	nbd_backend_free(b);
	return r;
}

/* An export exists already: "creating" an image on it writes into it (the
 * format's create then sets a size, which must fit). */
static int nbd_create_on_export(struct img_file *f, const char *uri, bool excl,
				char *errbuf, size_t errlen)
{
	(void)excl;
	return nbd_open(f, uri, true, 0, errbuf, errlen);
}

static void nbd_backend_close(struct img_file *f)
{
	nbd_backend_free(f->backend);
	f->backend = NULL;
}

/* A connection for one request (round robin); NULL when all are dead.
 * The request's commands are issued and completed on it. */
static struct nbd_connection *nbd_take(struct nbd_backend *b)
{
	unsigned start = __atomic_fetch_add(&b->next, 1, __ATOMIC_RELAXED);

	for (int i = 0; i < b->nconn; i++) {
		struct nbd_connection *c = &b->conn[(start + i) % b->nconn];

		if (c->dead)
			continue;
		if (!nbd_aio_is_ready(c->h) && !nbd_aio_is_processing(c->h)) {
			c->dead = true;
			continue;
		}
		/* an idle connection's silence counts from this request */
		if (nbd_aio_in_flight(c->h) == 0)
			__atomic_store_n(&c->last_progress, now_ms(),
					 __ATOMIC_RELAXED);
		return c;
	}
	return NULL;
}

static int nbd_lost(struct img_file *f)
{
	return img_file_fail(f, -ECONNRESET,
			     "the connection to the server was lost");
}

/* Reads or writes the iovec at off in pieces, up to NBD_MAX_IN_FLIGHT at
 * once on one connection. */
static int nbd_transfer(struct img_file *f, const struct iovec *iov, int iovcnt,
			uint64_t off, bool write)
{
	struct nbd_backend *b = f->backend;
	struct nbd_connection *c = nbd_take(b);
	int64_t cookies[NBD_MAX_IN_FLIGHT];
	char msg[IMG_ERRMSG_MAX] = "";
	uint64_t start = off;
	int n = 0, r = 0;

	if (!c)
		return nbd_lost(f);
	for (int i = 0; i < iovcnt && r == 0; i++) {
		size_t done = 0;

		while (done < iov[i].iov_len && r == 0) {
			size_t len = iov[i].iov_len - done;
			char *p = (char *)iov[i].iov_base + done;

			if (len > b->piece)
				len = b->piece;
			cookies[n] =
				write ? nbd_aio_pwrite(c->h, p, len, off,
						       NBD_NULL_COMPLETION, 0)
				      : nbd_aio_pread(c->h, p, len, off,
						      NBD_NULL_COMPLETION, 0);
			if (cookies[n] < 0) {
				r = nbd_errno(-EIO);
				snprintf(msg, sizeof(msg), "%s", nbd_message());
				break;
			}
			n++;
			off += len;
			done += len;
			if (n == NBD_MAX_IN_FLIGHT) {
				r = nbd_wait(c, cookies, n, msg, sizeof(msg));
				n = 0;
			}
		}
	}
	if (n > 0) {
		int w = nbd_wait(c, cookies, n, msg, sizeof(msg));

		if (r == 0)
			r = w;
	}
	if (r < 0 && nbd_aio_is_dead(c->h))
		c->dead = true;
	if (r < 0)
		return img_file_fail(f, r, "%s at offset %" PRIu64 ": %s",
				     write ? "write" : "read", start, msg);
	return 0;
}

static int nbd_read_pieces(struct img_file *f, const struct iovec *iov,
			   int iovcnt, uint64_t off)
{
	return nbd_transfer(f, iov, iovcnt, off, false);
}

static int nbd_preadv(struct img_file *f, const struct iovec *iov, int iovcnt,
		      uint64_t off, bool zero_eof)
{
	struct nbd_backend *b = f->backend;

	return img_backend_read_below(f, iov, iovcnt, off, b->size, zero_eof,
				      "the export", nbd_read_pieces);
}

static int nbd_pwritev(struct img_file *f, const struct iovec *iov, int iovcnt,
		       uint64_t off)
{
	struct nbd_backend *b = f->backend;

	if (off + img_iov_total(iov, iovcnt) > b->size)
		return img_file_fail(f, -ENOSPC,
				     "write at offset %" PRIu64
				     " past the end of the export (%" PRIu64
				     " bytes)",
				     off, b->size);
	img_extent_cache_clear(&b->status);
	return nbd_transfer(f, iov, iovcnt, off, true);
}

/* One command without data (flush, trim, zero) on one connection. */
static int nbd_command(struct img_file *f, const char *what, int kind,
		       uint64_t off, uint64_t len)
{
	struct nbd_backend *b = f->backend;
	struct nbd_connection *c;
	char msg[IMG_ERRMSG_MAX] = "";
	int64_t cookie;
	int r;

	if (kind != 0)
		img_extent_cache_clear(&b->status);
	c = nbd_take(b);
	if (!c)
		return nbd_lost(f);
	switch (kind) {
	case 0:
		cookie = nbd_aio_flush(c->h, NBD_NULL_COMPLETION, 0);
		break;
	case 1:
		cookie = nbd_aio_trim(c->h, len, off, NBD_NULL_COMPLETION, 0);
		break;
	default:
		cookie = nbd_aio_zero(c->h, len, off, NBD_NULL_COMPLETION, 0);
		break;
	}
	if (cookie < 0) {
		r = nbd_failure(c, msg, sizeof(msg));
	} else {
		r = nbd_wait(c, &cookie, 1, msg, sizeof(msg));
	}
	if (r < 0)
		return img_file_fail(f, r, "%s: %s", what, msg);
	return 0;
}

static int nbd_flush_export(struct img_file *f)
{
	struct nbd_backend *b = f->backend;

	if (!f->writable || !b->can_flush)
		return 0;
	return nbd_command(f, "flush", 0, 0, 0);
}

static int nbd_export_size(struct img_file *f, uint64_t *size)
{
	*size = ((struct nbd_backend *)f->backend)->size;
	return 0;
}

static int nbd_export_truncate(struct img_file *f, uint64_t size)
{
	struct nbd_backend *b = f->backend;

	/* An export's size is fixed; a format may still "set" the size it
	 * already has, or ask for less (the tail then stays unused). */
	if (size <= b->size)
		return 0;
	return img_file_fail(f, -ENOSPC,
			     "the export has %" PRIu64 " bytes, %" PRIu64
			     " needed (an NBD export cannot grow)",
			     b->size, size);
}

/* Split long ranges: a command's length is 32 bits on the wire. */
static int nbd_ranged(struct img_file *f, const char *what, int kind,
		      uint64_t off, uint64_t len)
{
	while (len) {
		uint64_t n = len > NBD_STATUS_MAX ? NBD_STATUS_MAX : len;
		int r = nbd_command(f, what, kind, off, n);

		if (r < 0)
			return r;
		off += n;
		len -= n;
	}
	return 0;
}

static int nbd_discard_range(struct img_file *f, uint64_t off, uint64_t len)
{
	if (!((struct nbd_backend *)f->backend)->can_trim)
		return -EOPNOTSUPP;
	return nbd_ranged(f, "trim", 1, off, len);
}

static int nbd_zero_range(struct img_file *f, uint64_t off, uint64_t len)
{
	if (!((struct nbd_backend *)f->backend)->can_zero)
		return -EOPNOTSUPP;
	return nbd_ranged(f, "write zeroes", 2, off, len);
}

static int nbd_status_entry(void *opaque, const char *context, uint64_t off,
			    uint32_t *entries, size_t nr, int *error)
{
	struct img_extent_cache *filled = opaque;

	(void)off;
	(void)error;
	if (strcmp(context, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0)
		return 0;
	/* Only what reads as zero may be skipped; a hole that does not read
	 * as zero is data to a copy. */
	for (size_t i = 0; i + 1 < nr; i += 2)
		if (!img_extent_cache_append(filled, entries[i],
					     !(entries[i + 1] &
					       LIBNBD_STATE_ZERO)))
			break;
	return 0;
}

/* One block status request for [off, off+len) on one connection, its
 * extents to callback.  0 or -errno with the message set. */
static int nbd_status_request(struct img_file *f, uint64_t off, uint64_t len,
			      nbd_extent_callback callback)
{
	struct nbd_connection *c = nbd_take(f->backend);
	char msg[IMG_ERRMSG_MAX] = "";
	int64_t cookie;
	int r;

	if (!c)
		return nbd_lost(f);
	cookie = nbd_aio_block_status(c->h, len, off, callback,
				      NBD_NULL_COMPLETION, 0);
	if (cookie < 0)
		r = nbd_failure(c, msg, sizeof(msg));
	else
		r = nbd_wait(c, &cookie, 1, msg, sizeof(msg));
	if (r < 0)
		return img_file_fail(f, r, "block status at %" PRIu64 ": %s",
				     off, msg);
	return 0;
}

static int nbd_status_fill(struct img_file *f, uint64_t off, uint64_t window,
			   struct img_extent_cache *filled)
{
	return nbd_status_request(
		f, off, window,
		(nbd_extent_callback){ .callback = nbd_status_entry,
				       .user_data = filled });
}

static int nbd_export_extent(struct img_file *f, uint64_t off, uint64_t len,
			     bool *is_data, uint64_t *run)
{
	struct nbd_backend *b = f->backend;

	if (!b->have_allocation)
		return 0;
	return img_extent_cache_answer(f, &b->status, b->size, NBD_STATUS_MAX,
				       nbd_status_fill, off, len, is_data, run);
}

struct nbd_allocation_count {
	uint64_t allocated, seen, limit; /* bytes; limit: the window asked */
};

static int nbd_count_allocated(void *opaque, const char *context, uint64_t off,
			       uint32_t *entries, size_t nr, int *error)
{
	struct nbd_allocation_count *n = opaque;

	(void)off;
	(void)error;
	if (strcmp(context, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0)
		return 0;
	for (size_t i = 0; i + 1 < nr && n->seen < n->limit; i += 2) {
		/* the last extent may reach past what was asked */
		uint64_t len = entries[i] < n->limit - n->seen
				       ? entries[i]
				       : n->limit - n->seen;

		if (!(entries[i + 1] & LIBNBD_STATE_HOLE))
			n->allocated += len;
		n->seen += len;
	}
	return 0;
}

/* The export's extents the server says are not holes (base:allocation),
 * as nbdinfo --map lists them. */
static int nbd_export_allocated(struct img_file *f, uint64_t *bytes)
{
	struct nbd_backend *b = f->backend;
	uint64_t off = 0;

	*bytes = 0;
	if (!b->have_allocation)
		return -ENOTSUP;
	while (off < b->size) {
		uint64_t window = b->size - off < NBD_STATUS_MAX
					  ? b->size - off
					  : NBD_STATUS_MAX;
		struct nbd_allocation_count n = { .limit = window };
		int r = nbd_status_request(
			f, off, window,
			(nbd_extent_callback){ .callback = nbd_count_allocated,
					       .user_data = &n });

		if (r < 0)
			return r;
		if (n.seen == 0)
			return img_file_fail(f, -EIO,
					     "block status at %" PRIu64
					     ": the server described nothing",
					     off);
		*bytes += n.allocated;
		off += n.seen;
	}
	return 0;
}

const struct img_file_ops img_backend_nbd = {
	.name = "nbd",
	.open = nbd_open,
	.create = nbd_create_on_export,
	.close = nbd_backend_close,
	.preadv = nbd_preadv,
	.pwritev = nbd_pwritev,
	.flush = nbd_flush_export,
	.size = nbd_export_size,
	.truncate = nbd_export_truncate,
	.discard = nbd_discard_range,
	.zero = nbd_zero_range,
	.extent = nbd_export_extent,
	.allocated = nbd_export_allocated,
};
