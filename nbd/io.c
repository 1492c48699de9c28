/* SPDX-License-Identifier: MIT */
/*
 * Connection I/O, plain sockets or TLS (OpenSSL).  Plain writes go out with
 * one sendmsg per reply so READ data leaves straight from its buffer.
 */
#include "nbd_internal.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int nbd_tls_read(struct nbd_conn *c, void *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		size_t got = 0;
		int r = SSL_read_ex(c->ssl, (char *)buf + done, len - done,
				    &got);
		if (r <= 0) {
			int e = SSL_get_error(c->ssl, r);
			ERR_clear_error();
			return e == SSL_ERROR_ZERO_RETURN ? -ECONNRESET : -EIO;
		}
		done += got;
	}
	return 0;
}

int nbd_conn_read(struct nbd_conn *c, void *buf, size_t len)
{
	size_t done = 0;

	if (c->ssl)
		return nbd_tls_read(c, buf, len);
	while (done < len) {
		ssize_t n = recv(c->fd, (char *)buf + done, len - done, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -ECONNRESET;
		done += (size_t)n;
	}
	return 0;
}

int nbd_conn_discard(struct nbd_conn *c, uint64_t len)
{
	char scratch[16384];

	while (len) {
		size_t n = len < sizeof(scratch) ? len : sizeof(scratch);
		int r = nbd_conn_read(c, scratch, n);
		if (r < 0)
			return r;
		len -= n;
	}
	return 0;
}

static int nbd_tls_writev(struct nbd_conn *c, const struct iovec *iov,
			  int iovcnt)
{
	for (int i = 0; i < iovcnt; i++) {
		size_t done = 0;
		while (done < iov[i].iov_len) {
			size_t put = 0;
			int r = SSL_write_ex(c->ssl,
					     (char *)iov[i].iov_base + done,
					     iov[i].iov_len - done, &put);
			if (r <= 0) {
				ERR_clear_error();
				return -EIO;
			}
			done += put;
		}
	}
	return 0;
}

int nbd_conn_writev(struct nbd_conn *c, const struct iovec *iov, int iovcnt)
{
	struct iovec local[136]; /* a structured READ reply has up to 128 */
	struct iovec *v = (struct iovec *)iov;
	int r = 0;

	if (c->ssl)
		return nbd_tls_writev(c, iov, iovcnt);
	/* sendmsg may stop part-way; the iovec is advanced in a copy. */
	if (iovcnt <= (int)(sizeof(local) / sizeof(local[0]))) {
		memcpy(local, iov, sizeof(*iov) * (size_t)iovcnt);
		v = local;
	} else {
		v = malloc(sizeof(*iov) * (size_t)iovcnt);
		if (!v)
			return -ENOMEM;
		memcpy(v, iov, sizeof(*iov) * (size_t)iovcnt);
	}
	struct iovec *cur = v;
	int left = iovcnt;
	while (left > 0) {
		struct msghdr msg = { .msg_iov = cur,
				      .msg_iovlen = (size_t)left };
		ssize_t n = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			break;
		}
		while (left > 0 && (size_t)n >= cur->iov_len) {
			n -= (ssize_t)cur->iov_len;
			cur++;
			left--;
		}
		if (left > 0) {
			cur->iov_base = (char *)cur->iov_base + n;
			cur->iov_len -= (size_t)n;
		}
	}
	if (v != local)
		free(v);
	return r;
}

int nbd_conn_write(struct nbd_conn *c, const void *buf, size_t len)
{
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };

	return nbd_conn_writev(c, &iov, 1);
}

/* ---- TLS ---------------------------------------------------------------*/

int nbd_tls_context_new(SSL_CTX **out, const char *cert, const char *key,
			char *errbuf, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	unsigned long e;

	if (!ctx)
		goto fail;
	if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION))
		goto fail;
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
		snprintf(errbuf, errlen, "%s: cannot load TLS certificate",
			 cert);
		goto fail_msg;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
		snprintf(errbuf, errlen, "%s: cannot load TLS private key",
			 key);
		goto fail_msg;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		snprintf(errbuf, errlen, "%s: key does not match %s", key,
			 cert);
		goto fail_msg;
	}
	*out = ctx;
	return 0;
fail:
	e = ERR_peek_last_error();
	snprintf(errbuf, errlen, "TLS setup failed: %s",
		 e ? ERR_reason_error_string(e) : "unknown error");
fail_msg:
	ERR_clear_error();
	SSL_CTX_free(ctx);
	return -EINVAL;
}

void nbd_tls_context_free(SSL_CTX *ctx)
{
	SSL_CTX_free(ctx);
}

int nbd_tls_accept(struct nbd_conn *c)
{
	SSL *ssl = SSL_new(c->srv->tls_ctx);

	if (!ssl)
		return -ENOMEM;
	if (SSL_set_fd(ssl, c->fd) != 1 || SSL_accept(ssl) != 1) {
		ERR_clear_error();
		SSL_free(ssl);
		return -EPROTO;
	}
	c->ssl = ssl;
	return 0;
}

void nbd_tls_close(struct nbd_conn *c)
{
	if (!c->ssl)
		return;
	SSL_shutdown(c->ssl);
	ERR_clear_error();
	SSL_free(c->ssl);
	c->ssl = NULL;
}
