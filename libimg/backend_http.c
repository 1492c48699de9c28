/* SPDX-License-Identifier: MIT */
/*
 * The HTTP(S) backend, read-only: http://... and https://... through
 * libcurl, each read one Range request.
 *
 * Opening asks for the first byte: a 206 answer gives the size from
 * Content-Range; a 200 answer means the server ignores ranges, which is a
 * clear error rather than a download of the whole image per read.
 * Transient failures (connection refused or reset, 5xx, 429, a transfer
 * cut short) are retried a few times with a growing pause, continuing
 * after the bytes already received.  A server that sends nothing for
 * img_backend_timeout() seconds fails the read.  Each thread borrows an
 * easy handle from a small pool, so connections are kept alive and reads
 * run in parallel.
 */
#include "backend.h"
#include "dynlib.h"
#include "internal.h"

#include <curl/curl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* libcurl is loaded by the first http(s):// name (dynlib.h); the
 * type-checking macro of its header goes, the pointer takes the name. */
#define HTTP_FUNCTIONS(X)     \
	X(curl_easy_cleanup)  \
	X(curl_easy_init)     \
	X(curl_easy_perform)  \
	X(curl_easy_setopt)   \
	X(curl_easy_strerror) \
	X(curl_global_init)
IMG_DYNLIB_DEFINE(http, HTTP_FUNCTIONS, "libcurl.so.4", "libcurl4");
#define curl_easy_cleanup http_lib.curl_easy_cleanup
#define curl_easy_init http_lib.curl_easy_init
#define curl_easy_perform http_lib.curl_easy_perform
#undef curl_easy_setopt
#define curl_easy_setopt http_lib.curl_easy_setopt
#define curl_easy_strerror http_lib.curl_easy_strerror
#define curl_global_init http_lib.curl_global_init

enum {
	HTTP_ATTEMPTS = 4,
	HTTP_POOL = 8,
};

struct http_backend {
	char *url;
	uint64_t size;
	pthread_mutex_t lock; /* the pool */
	int nfree;
	CURL *free[HTTP_POOL];
};

/* What one request collects. */
struct http_request {
	const struct iovec *iov;
	int iovcnt;
	size_t want, got; /* bytes of the iovec filled */
	long status;	  /* of the response being received */
	uint64_t total;	  /* from Content-Range, 0 if absent */
	bool ignores_range;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void http_global_init(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

static size_t http_header(char *line, size_t size, size_t n, void *opaque)
{
	struct http_request *rq = opaque;
	size_t len = size * n;
	unsigned long long a, b, total;

	if (len > 5 && strncmp(line, "HTTP/", 5) == 0) {
		/* a new response (after a redirect or 100 Continue) */
		rq->status = 0;
		rq->total = 0;
		sscanf(line, "HTTP/%*s %ld", &rq->status);
	} else if (len > 14 && strncasecmp(line, "Content-Range:", 14) == 0 &&
		   sscanf(line + 14, " bytes %llu-%llu/%llu", &a, &b, &total) ==
			   3) {
		rq->total = total;
	}
	return len;
}

static size_t http_body(char *data, size_t size, size_t n, void *opaque)
{
	struct http_request *rq = opaque;
	size_t len = size * n;

	if (rq->status == 200) {
		/* the whole file is coming: stop it */
		rq->ignores_range = true;
		return 0;
	}
	if (rq->status != 206)
		return len; /* an error page: the status says it all */
	if (len > rq->want - rq->got)
		return 0; /* more than asked for */
	img_iov_from_buf(rq->iov, rq->iovcnt, rq->got, data, len);
	rq->got += len;
	return len;
}

static CURL *http_take(struct http_backend *b)
{
	CURL *c = NULL;
	int timeout = img_backend_timeout();

	pthread_mutex_lock(&b->lock);
	if (b->nfree > 0)
		c = b->free[--b->nfree];
	pthread_mutex_unlock(&b->lock);
	if (c)
		return c;
	c = curl_easy_init();
	if (!c)
		return NULL;
	curl_easy_setopt(c, CURLOPT_URL, b->url);
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
	curl_easy_setopt(c, CURLOPT_MAXREDIRS, 8L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, (long)timeout);
	/* a stall: under one byte a second for the timeout */
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, (long)timeout);
	curl_easy_setopt(c, CURLOPT_USERAGENT, "imgtool/" IMG_VERSION);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, http_header);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, http_body);
	/* identity only: a compressed body would not match the range */
	curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, NULL);
	return c;
}

static void http_give_back(struct http_backend *b, CURL *c)
{
	pthread_mutex_lock(&b->lock);
	if (b->nfree < HTTP_POOL) {
		b->free[b->nfree++] = c;
		c = NULL;
	}
	pthread_mutex_unlock(&b->lock);
	if (c)
		curl_easy_cleanup(c);
}

static bool http_transient(CURLcode code, long status)
{
	switch (code) {
	case CURLE_OK:
		return status >= 500 || status == 429 || status == 408;
	case CURLE_COULDNT_CONNECT:
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
	case CURLE_PARTIAL_FILE:
	case CURLE_GOT_NOTHING:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
		return true;
	default:
		return false;
	}
}

/* GET [off, off + want) into the iovec, retrying transient failures. */
static int http_get(struct http_backend *b, struct http_request *rq,
		    uint64_t off, char *errbuf, size_t errlen)
{
	CURL *c = http_take(b);
	CURLcode code = CURLE_OK;
	char range[64];
	int r = 0;

	if (!c)
		return img_error_buf(errbuf, errlen, -ENOMEM, "out of memory");
	curl_easy_setopt(c, CURLOPT_HEADERDATA, rq);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, rq);
	for (int attempt = 1;; attempt++) {
		uint64_t from = off + rq->got;

		snprintf(range, sizeof(range), "%" PRIu64 "-%" PRIu64, from,
			 off + rq->want - 1);
		curl_easy_setopt(c, CURLOPT_RANGE, range);
		rq->status = 0;
		code = curl_easy_perform(c);
		if (rq->ignores_range) {
			r = img_error_buf(
				errbuf, errlen, -EOPNOTSUPP,
				"the server does not support range requests (it answers with the whole file)");
			break;
		}
		if (code == CURLE_OK && rq->status == 206 &&
		    rq->got == rq->want)
			break;
		if (code == CURLE_OK && rq->status == 206)
			code = CURLE_PARTIAL_FILE;
		if (attempt >= HTTP_ATTEMPTS ||
		    !http_transient(code, rq->status)) {
			if (code == CURLE_OPERATION_TIMEDOUT)
				r = img_error_buf(
					errbuf, errlen, -ETIMEDOUT,
					"no data from the server for %d s (%d attempts)",
					img_backend_timeout(), attempt);
			else if (code != CURLE_OK)
				r = img_error_buf(
					errbuf, errlen,
					code == CURLE_OPERATION_TIMEDOUT
						? -ETIMEDOUT
						: -EIO,
					"%s%s", curl_easy_strerror(code),
					attempt > 1 ? " (after retries)" : "");
			else if (rq->status == 416)
				r = img_error_buf(errbuf, errlen, -EIO,
						  "range %s is past the end",
						  range);
			else
				r = img_error_buf(
					errbuf, errlen,
					rq->status == 404   ? -ENOENT
					: rq->status == 403 ? -EACCES
							    : -EIO,
					"HTTP status %ld%s", rq->status,
					attempt > 1 ? " (after retries)" : "");
			break;
		}
		/* 0.25 s, 0.5 s, 1 s */
		nanosleep(
			&(struct timespec){
				.tv_nsec =
					250000000L << (attempt - 1) > 999999999L
						? 999999999L
						: 250000000L << (attempt - 1) },
			NULL);
	}
	if (r < 0) {
		curl_easy_cleanup(c); /* its connection may be in any state */
		return r;
	}
	http_give_back(b, c);
	return 0;
}

static void http_backend_free(struct http_backend *b)
{
	for (int i = 0; i < b->nfree; i++)
		curl_easy_cleanup(b->free[i]);
	pthread_mutex_destroy(&b->lock);
	free(b->url);
	free(b);
}

static int http_open(struct img_file *f, const char *url, bool writable,
		     unsigned flags, char *errbuf, size_t errlen)
{
	struct http_backend *b;
	struct http_request rq = { 0 };
	uint8_t first;
	struct iovec iov = { .iov_base = &first, .iov_len = 1 };
	int r;

	(void)flags;
	if (writable)
		return img_error_buf(errbuf, errlen, -EROFS,
				     "HTTP images are read-only");
	r = img_dynlib_load(&http_library, errbuf, errlen);
	if (r < 0)
		return r;
	pthread_once(&curl_once, http_global_init);
	b = calloc(1, sizeof(*b));
	if (!b)
		return img_error_buf(errbuf, errlen, -ENOMEM, "out of memory");
	pthread_mutex_init(&b->lock, NULL);
	b->url = strdup(url);
	if (!b->url) {
		http_backend_free(b);
		return img_error_buf(errbuf, errlen, -ENOMEM, "out of memory");
	}
	rq.iov = &iov;
	rq.iovcnt = 1;
	rq.want = 1;
	r = http_get(b, &rq, 0, errbuf, errlen);
	if (r == 0 && rq.total == 0)
		r = img_error_buf(
			errbuf, errlen, -EOPNOTSUPP,
			"the server gives no size (Content-Range) for a range request");
	if (r < 0) {
		/* An empty file answers 416 to any range. */
		http_backend_free(b);
		return r;
	}
	b->size = rq.total;
	f->backend = b;
	return 0;
}

static void http_close(struct img_file *f)
{
	http_backend_free(f->backend);
	f->backend = NULL;
}

static int http_preadv(struct img_file *f, const struct iovec *iov, int iovcnt,
		       uint64_t off, bool zero_eof)
{
	struct http_backend *b = f->backend;
	size_t total = img_iov_total(iov, iovcnt);
	struct http_request rq = { .iov = iov, .iovcnt = iovcnt };
	char msg[IMG_ERRMSG_MAX];
	int r;

	if (total == 0)
		return 0;
	if (off + total > b->size) {
		size_t inside = off >= b->size ? 0 : (size_t)(b->size - off);

		if (!zero_eof)
			return img_file_fail(
				f, -EIO,
				"unexpected end of file at offset %" PRIu64,
				off >= b->size ? off : b->size);
		img_iov_memset(iov, iovcnt, inside, 0, total - inside);
		total = inside;
		if (total == 0)
			return 0;
	}
	rq.want = total;
	r = http_get(b, &rq, off, msg, sizeof(msg));
	if (r < 0)
		return img_file_fail(f, r, "read at offset %" PRIu64 ": %s",
				     off, msg);
	return 0;
}

static int http_size(struct img_file *f, uint64_t *size)
{
	*size = ((struct http_backend *)f->backend)->size;
	return 0;
}

const struct img_file_ops img_backend_http = {
	.name = "http",
	.open = http_open,
	.close = http_close,
	.preadv = http_preadv,
	.size = http_size,
};
