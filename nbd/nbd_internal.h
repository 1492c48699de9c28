/* SPDX-License-Identifier: MIT */
/* NBD server internals shared by server.c, handshake.c, transmission.c
 * and io.c. */
#ifndef NBD_INTERNAL_H
#define NBD_INTERNAL_H

#include "nbd_server.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

typedef struct ssl_st SSL;
typedef struct ssl_ctx_st SSL_CTX;

struct nbd_export {
	char *name;
	char *description;
	struct img *img;
	bool read_only;
	uint64_t size;
	uint32_t preferred_block;
	struct nbd_export *next;
};

struct nbd_server {
	struct nbd_server_options opts;
	struct nbd_export *exports, **exports_tail;
	unsigned nexports;
	SSL_CTX *tls_ctx; /* non-NULL: TLS required */

	int listen_fds[16];
	int nlisten;
	char *unix_path; /* created by us, unlinked at free */
	int stop_pipe[2];

	pthread_mutex_t lock;
	pthread_cond_t idle; /* nclients dropped to 0 */
	unsigned nclients;
	struct nbd_conn *clients; /* for shutdown at stop */
	bool stopping;
};

/* A client connection: handshake, then transmission. */
struct nbd_conn {
	struct nbd_server *srv;
	int fd;
	SSL *ssl; /* after STARTTLS */
	char peer[64];
	struct nbd_conn *next, *prev; /* in srv->clients, under srv->lock */

	/* negotiated */
	struct nbd_export *export;
	bool no_zeroes;
	bool structured;
	bool base_allocation; /* meta context selected, id 1 */

	/* transmission */
	pthread_mutex_t send_lock;
	bool send_failed;
	_Atomic bool wrote; /* flush at disconnect; set by any worker */
};

#define NBD_META_BASE_ALLOCATION_ID 1u

void nbd_log(struct nbd_server *srv, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Connection I/O, plain or TLS.  0 or -errno; -ECONNRESET at EOF. */
int nbd_conn_read(struct nbd_conn *c, void *buf, size_t len);
int nbd_conn_discard(struct nbd_conn *c, uint64_t len);
/* Writes every byte of iov (sendmsg, or SSL_write for TLS). */
int nbd_conn_writev(struct nbd_conn *c, const struct iovec *iov, int iovcnt);
int nbd_conn_write(struct nbd_conn *c, const void *buf, size_t len);

/* TLS (io.c) */
int nbd_tls_context_new(SSL_CTX **out, const char *cert, const char *key,
			char *errbuf, size_t errlen);
void nbd_tls_context_free(SSL_CTX *ctx);
int nbd_tls_accept(struct nbd_conn *c);
void nbd_tls_close(struct nbd_conn *c);

/* handshake.c: 1 = go to transmission, 0 = client ended cleanly,
 * -errno = drop the client. */
int nbd_handshake(struct nbd_conn *c);

/* transmission.c: serves requests until disconnect. */
void nbd_transmission(struct nbd_conn *c);

#endif
