/* SPDX-License-Identifier: MIT */
/*
 * NBD transmission phase.  Several threads serve one connection, taking
 * turns to read the next request (and a WRITE's payload) from the socket;
 * the thread that read a request runs it against the image and sends its
 * reply at once, so replies go out of order and no request is handed from
 * thread to thread.  A READ reply leaves with one sendmsg straight from the
 * buffer the image was read into; with structured replies, holes (from
 * block status) are sent as OFFSET_HOLE chunks instead of zeros.
 *
 * TLS connections use the connection thread alone: one SSL object must
 * not be used from several threads at once.
 */
#include "nbd_internal.h"
#include "nbd_proto.h"

#include "driver.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>

#define NBD_DEFAULT_WORKERS 4
#define NBD_MAX_WORKERS 64
/* Smaller reads are sent as data without asking for block status: the
 * lookup would cost more than the zeros it saves. */
#define NBD_SPARSE_READ_MIN (64u << 10)
/* Chunks in one structured READ reply, descriptors in one BLOCK_STATUS. */
#define NBD_READ_MAX_CHUNKS 64
#define NBD_STATUS_MAX_DESCRIPTORS 1024
/* A client that stops reading replies is dropped after this long. */
#define NBD_SEND_TIMEOUT_SECONDS 120

/* One thread's request, and the buffer it keeps for WRITE payloads and
 * READ data from request to request. */
struct nbd_work {
	uint16_t flags;
	uint16_t type;
	uint64_t cookie;
	uint64_t offset;
	uint32_t length;
	void *buf;
	size_t buf_size;
};

/* Buffers up to this size are kept between requests; bigger ones are
 * freed after use so idle threads do not sit on 32 MiB each. */
#define NBD_BUFFER_KEEP (4u << 20)

/* The threads of one connection. */
struct nbd_session {
	struct nbd_conn *conn;
	pthread_mutex_t recv_lock; /* one reader at a time */
	bool done;		   /* disconnected: no more reading */
};

static uint32_t nbd_errno_to_wire(int err)
{
	switch (-err) {
	case EPERM:
	case EROFS:
	case EACCES:
		return NBD_EPERM;
	case ENOMEM:
		return NBD_ENOMEM;
	case EINVAL:
		return NBD_EINVAL;
	case ENOSPC:
	case EFBIG:
	case EDQUOT:
		return NBD_ENOSPC;
	case EOVERFLOW:
		return NBD_EOVERFLOW;
	case ENOTSUP:
		return NBD_ENOTSUP;
	case ESHUTDOWN:
		return NBD_ESHUTDOWN;
	default:
		return NBD_EIO;
	}
}

/* Makes w->buf at least len bytes: 0 or -ENOMEM. */
static int nbd_work_buffer(struct nbd_work *w, size_t len)
{
	void *p = NULL;

	if (len <= w->buf_size)
		return 0;
	/* page-aligned, so images opened with O_DIRECT need no bounce */
	if (posix_memalign(&p, 4096, len))
		return -ENOMEM;
	free(w->buf);
	w->buf = p;
	w->buf_size = len;
	return 0;
}

static void nbd_work_buffer_trim(struct nbd_work *w)
{
	if (w->buf_size > NBD_BUFFER_KEEP) {
		free(w->buf);
		w->buf = NULL;
		w->buf_size = 0;
	}
}

/* Sends one whole reply; a failed send drops the client (the reader is
 * woken by the shutdown). */
static void nbd_send(struct nbd_conn *c, const struct iovec *iov, int iovcnt)
{
	pthread_mutex_lock(&c->send_lock);
	if (!c->send_failed && nbd_conn_writev(c, iov, iovcnt) < 0) {
		c->send_failed = true;
		shutdown(c->fd, SHUT_RDWR);
	}
	pthread_mutex_unlock(&c->send_lock);
}

static void nbd_reply_simple(struct nbd_conn *c, uint64_t cookie, int err)
{
	struct nbd_simple_reply rep = {
		.magic = IMG_BE32(NBD_SIMPLE_REPLY_MAGIC),
		.error = IMG_BE32(err ? nbd_errno_to_wire(err) : 0),
		.cookie = cookie, /* opaque: echoed as received */
	};
	struct iovec iov = { &rep, sizeof(rep) };

	nbd_send(c, &iov, 1);
}

static void nbd_chunk_header(struct nbd_chunk_header *h, uint64_t cookie,
			     uint16_t flags, uint16_t type, uint32_t length)
{
	h->magic = IMG_BE32(NBD_STRUCTURED_REPLY_MAGIC);
	h->flags = IMG_BE16(flags);
	h->type = IMG_BE16(type);
	h->cookie = cookie;
	h->length = IMG_BE32(length);
}

static void nbd_reply_error_chunk(struct nbd_conn *c, uint64_t cookie, int err)
{
	struct nbd_chunk_error ch;
	struct iovec iov = { &ch, sizeof(ch) };

	nbd_chunk_header(&ch.h, cookie, NBD_REPLY_FLAG_DONE,
			 NBD_REPLY_TYPE_ERROR, 6);
	ch.error = IMG_BE32(nbd_errno_to_wire(err));
	ch.message_length = 0;
	nbd_send(c, &iov, 1);
}

/* Reads with structured replies answer errors with an error chunk. */
static void nbd_reply_error(struct nbd_conn *c, const struct nbd_work *w,
			    int err)
{
	if (c->structured &&
	    (w->type == NBD_CMD_READ || w->type == NBD_CMD_BLOCK_STATUS))
		nbd_reply_error_chunk(c, w->cookie, err);
	else
		nbd_reply_simple(c, w->cookie, err);
}

static void nbd_do_read_simple(struct nbd_conn *c, const struct nbd_work *w,
			       void *buf)
{
	struct nbd_simple_reply rep = {
		.magic = IMG_BE32(NBD_SIMPLE_REPLY_MAGIC),
		.cookie = w->cookie,
	};
	struct iovec iov[2] = { { &rep, sizeof(rep) }, { buf, w->length } };
	int r = img_pread(c->export->img, buf, w->length, w->offset);

	if (r < 0) {
		nbd_reply_error(c, w, r);
		return;
	}
	nbd_send(c, iov, 2);
}

struct nbd_read_chunk {
	uint64_t offset;
	uint32_t length;
	bool hole;
	union {
		struct nbd_chunk_offset_data data;
		struct nbd_chunk_offset_hole hole;
	} h;
};

/* Splits the range into data and hole chunks by block status.  Returns the
 * chunk count (at least 1). */
static int nbd_read_plan(struct img *img, uint64_t off, uint32_t len,
			 struct nbd_read_chunk *ch, int max)
{
	uint64_t pos = off, end = off + len;
	int n = 0;

	while (pos < end) {
		struct img_extent ext;
		uint64_t run;
		bool hole;

		if (n == max - 1 ||
		    img_block_status(img, pos, end - pos, &ext) < 0) {
			/* the rest goes as data */
			hole = false;
			run = end - pos;
		} else {
			hole = ext.flags & IMG_EXTENT_ZERO;
			run = ext.length < end - pos ? ext.length : end - pos;
			if (run == 0)
				run = end - pos;
		}
		if (n && ch[n - 1].hole == hole) {
			ch[n - 1].length += (uint32_t)run;
		} else {
			ch[n].offset = pos;
			ch[n].length = (uint32_t)run;
			ch[n].hole = hole;
			n++;
		}
		pos += run;
	}
	return n;
}

static void nbd_do_read_structured(struct nbd_conn *c, const struct nbd_work *w,
				   void *buf)
{
	struct nbd_read_chunk chunks[NBD_READ_MAX_CHUNKS];
	struct iovec iov[2 * NBD_READ_MAX_CHUNKS];
	struct img *img = c->export->img;
	int n, niov = 0, r;

	if ((w->flags & NBD_CMD_FLAG_DF) || w->length < NBD_SPARSE_READ_MIN) {
		chunks[0] = (struct nbd_read_chunk){ .offset = w->offset,
						     .length = w->length };
		n = 1;
	} else {
		n = nbd_read_plan(img, w->offset, w->length, chunks,
				  NBD_READ_MAX_CHUNKS);
	}
	/* Read everything before sending anything, so an error can still
	 * be the only reply chunk. */
	for (int i = 0; i < n; i++) {
		struct nbd_read_chunk *ch = &chunks[i];
		uint16_t flags = i == n - 1 ? NBD_REPLY_FLAG_DONE : 0;
		uint8_t *data = (uint8_t *)buf + (ch->offset - w->offset);

		if (ch->hole) {
			nbd_chunk_header(&ch->h.hole.h, w->cookie, flags,
					 NBD_REPLY_TYPE_OFFSET_HOLE, 12);
			ch->h.hole.offset = IMG_BE64(ch->offset);
			ch->h.hole.hole_size = IMG_BE32(ch->length);
			iov[niov++] = (struct iovec){ &ch->h.hole,
						      sizeof(ch->h.hole) };
			continue;
		}
		r = img_pread(img, data, ch->length, ch->offset);
		if (r < 0) {
			nbd_reply_error_chunk(c, w->cookie, r);
			return;
		}
		nbd_chunk_header(&ch->h.data.h, w->cookie, flags,
				 NBD_REPLY_TYPE_OFFSET_DATA, 8 + ch->length);
		ch->h.data.offset = IMG_BE64(ch->offset);
		iov[niov++] = (struct iovec){ &ch->h.data, sizeof(ch->h.data) };
		iov[niov++] = (struct iovec){ data, ch->length };
	}
	nbd_send(c, iov, niov);
}

static void nbd_do_read(struct nbd_conn *c, struct nbd_work *w)
{
	if (nbd_work_buffer(w, w->length) < 0) {
		nbd_reply_error(c, w, -ENOMEM);
		return;
	}
	if (c->structured && w->length)
		nbd_do_read_structured(c, w, w->buf);
	else
		nbd_do_read_simple(c, w, w->buf);
}

static uint32_t nbd_extent_state(const struct img_extent *ext)
{
	uint32_t state = 0;

	if (!(ext->flags & IMG_EXTENT_DATA))
		state |= NBD_STATE_HOLE;
	if (ext->flags & IMG_EXTENT_ZERO)
		state |= NBD_STATE_ZERO;
	return state;
}

static void nbd_do_block_status(struct nbd_conn *c, const struct nbd_work *w)
{
	int max = (w->flags & NBD_CMD_FLAG_REQ_ONE)
			  ? 1
			  : NBD_STATUS_MAX_DESCRIPTORS;
	struct nbd_block_descriptor *desc;
	struct nbd_chunk_header h;
	uint32_t context_id = IMG_BE32(NBD_META_BASE_ALLOCATION_ID);
	uint64_t pos = w->offset, end = w->offset + w->length;
	uint32_t last_state = 0;
	int n = 0, r = 0;

	desc = malloc(sizeof(*desc) * (size_t)max);
	if (!desc) {
		nbd_reply_error(c, w, -ENOMEM);
		return;
	}
	while (pos < end) {
		struct img_extent ext;
		uint64_t run;
		uint32_t state;

		r = img_block_status(c->export->img, pos, end - pos, &ext);
		if (r < 0)
			break;
		run = ext.length < end - pos ? ext.length : end - pos;
		if (run == 0)
			run = end - pos;
		state = nbd_extent_state(&ext);
		if (n && state == last_state) {
			desc[n - 1].length += (uint32_t)run;
		} else {
			if (n == max)
				break;
			desc[n].length = (uint32_t)run;
			desc[n].flags = state;
			last_state = state;
			n++;
		}
		pos += run;
	}
	if (n == 0) {
		nbd_reply_error(c, w, r < 0 ? r : -EIO);
		free(desc);
		return;
	}
	for (int i = 0; i < n; i++) {
		desc[i].length = IMG_BE32(desc[i].length);
		desc[i].flags = IMG_BE32(desc[i].flags);
	}
	nbd_chunk_header(&h, w->cookie, NBD_REPLY_FLAG_DONE,
			 NBD_REPLY_TYPE_BLOCK_STATUS,
			 4 + (uint32_t)(sizeof(*desc) * (size_t)n));
	struct iovec iov[3] = { { &h, sizeof(h) },
				{ &context_id, 4 },
				{ desc, sizeof(*desc) * (size_t)n } };
	nbd_send(c, iov, 3);
	free(desc);
}

/* Checks that need no image access.  0 or the -errno to reply. */
static int nbd_validate(const struct nbd_conn *c, const struct nbd_work *w)
{
	const struct nbd_export *e = c->export;
	uint16_t allowed = 0;
	bool writes = false;

	switch (w->type) {
	case NBD_CMD_READ:
		allowed = NBD_CMD_FLAG_DF;
		break;
	case NBD_CMD_WRITE:
		allowed = NBD_CMD_FLAG_FUA;
		writes = true;
		break;
	case NBD_CMD_TRIM:
		allowed = NBD_CMD_FLAG_FUA;
		writes = true;
		break;
	case NBD_CMD_WRITE_ZEROES:
		allowed = NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE;
		writes = true;
		break;
	case NBD_CMD_BLOCK_STATUS:
		allowed = NBD_CMD_FLAG_REQ_ONE;
		if (!c->structured || !c->base_allocation || !w->length)
			return -EINVAL;
		break;
	case NBD_CMD_FLUSH:
		return 0;
	default:
		return -EINVAL;
	}
	if (w->flags & ~allowed)
		return -EINVAL;
	if ((w->flags & NBD_CMD_FLAG_DF) && !c->structured)
		return -EINVAL;
	if (w->offset > e->size || w->length > e->size - w->offset)
		return -EINVAL;
	if (w->type == NBD_CMD_READ && w->length > NBD_SERVER_MAX_PAYLOAD)
		return c->structured ? -EOVERFLOW : -EINVAL;
	if (writes && e->read_only)
		return -EPERM;
	return 0;
}

static void nbd_execute(struct nbd_conn *c, struct nbd_work *w)
{
	struct img *img = c->export->img;
	int r = nbd_validate(c, w);

	if (r < 0) {
		nbd_reply_error(c, w, r);
		return;
	}
	switch (w->type) {
	case NBD_CMD_READ:
		nbd_do_read(c, w);
		return;
	case NBD_CMD_BLOCK_STATUS:
		nbd_do_block_status(c, w);
		return;
	case NBD_CMD_WRITE:
		c->wrote = true;
		r = img_pwrite(img, w->buf, w->length, w->offset);
		break;
	case NBD_CMD_TRIM:
		c->wrote = true;
		r = w->length ? img_discard(img, w->offset, w->length) : 0;
		break;
	case NBD_CMD_WRITE_ZEROES:
		c->wrote = true;
		r = w->length
			    ? img_write_zeroes(img, w->offset, w->length,
					       (w->flags & NBD_CMD_FLAG_NO_HOLE)
						       ? 0
						       : IMG_ZERO_MAY_UNMAP)
			    : 0;
		break;
	case NBD_CMD_FLUSH:
		r = img_flush(img);
		break;
	}
	if (r == 0 && (w->flags & NBD_CMD_FLAG_FUA))
		r = img_flush(img);
	nbd_reply_simple(c, w->cookie, r);
}

/* Reads one request (and a WRITE's payload) into w.  1: got one; 0: the
 * client disconnected or sent NBD_CMD_DISC; <0: protocol violation. */
static int nbd_read_request(struct nbd_conn *c, struct nbd_work *w)
{
	struct nbd_request req;
	int r;

	r = nbd_conn_read(c, &req, sizeof(req));
	if (r < 0)
		return r == -ECONNRESET ? 0 : r;
	if (IMG_BE32(req.magic) != NBD_REQUEST_MAGIC) {
		nbd_log(c->srv, "client %s: bad request magic, dropped",
			c->peer);
		return -EPROTO;
	}
	w->flags = IMG_BE16(req.flags);
	w->type = IMG_BE16(req.type);
	w->cookie = req.cookie;
	w->offset = IMG_BE64(req.offset);
	w->length = IMG_BE32(req.length);
	if (w->type == NBD_CMD_DISC)
		return 0;
	if (w->type == NBD_CMD_WRITE) {
		/* The payload cannot be skipped safely when it is this big:
		 * the stream is lost, so is the client. */
		if (w->length > NBD_SERVER_MAX_PAYLOAD) {
			nbd_log(c->srv, "client %s: write of %u bytes, dropped",
				c->peer, w->length);
			return -EPROTO;
		}
		r = nbd_work_buffer(w, w->length);
		if (r < 0)
			return r;
		r = nbd_conn_read(c, w->buf, w->length);
		if (r < 0) {
			/* disconnected mid-write: nothing was acknowledged */
			return r == -ECONNRESET ? 0 : r;
		}
	}
	return 1;
}

static unsigned nbd_worker_count(const struct nbd_conn *c)
{
	unsigned n = c->srv->opts.workers;

	if (c->ssl)
		return 1;
	if (n == 0)
		n = NBD_DEFAULT_WORKERS;
	return n > NBD_MAX_WORKERS ? NBD_MAX_WORKERS : n;
}

static void *nbd_worker_main(void *arg)
{
	struct nbd_session *s = arg;
	struct nbd_conn *c = s->conn;

	struct nbd_work w = { 0 };

	for (;;) {
		bool got = false;

		pthread_mutex_lock(&s->recv_lock);
		if (!s->done) {
			got = nbd_read_request(c, &w) == 1;
			s->done = !got;
		}
		pthread_mutex_unlock(&s->recv_lock);
		if (!got)
			break;
		nbd_execute(c, &w);
		nbd_work_buffer_trim(&w);
	}
	free(w.buf);
	return NULL;
}

void nbd_transmission(struct nbd_conn *c)
{
	struct timeval tv = { .tv_sec = NBD_SEND_TIMEOUT_SECONDS };
	pthread_t workers[NBD_MAX_WORKERS];
	unsigned nworkers = nbd_worker_count(c), started = 0;
	struct nbd_session s = { .conn = c };

	setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	pthread_mutex_init(&s.recv_lock, NULL);
	/* this thread is one of the workers */
	for (unsigned i = 1; i < nworkers; i++) {
		if (pthread_create(&workers[started], NULL, nbd_worker_main,
				   &s))
			break;
		started++;
	}
	nbd_worker_main(&s);
	/* Requests already read are answered before the others return. */
	for (unsigned i = 0; i < started; i++)
		pthread_join(workers[i], NULL);
	if (c->wrote)
		img_flush(c->export->img);
	pthread_mutex_destroy(&s.recv_lock);
}
