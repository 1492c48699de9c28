/* SPDX-License-Identifier: MIT */
/*
 * An NBD server over libimg handles: several exports, several clients,
 * several requests in flight per client.  The server never prints; it
 * reports through return values and an optional log callback.
 */
#ifndef NBD_SERVER_H
#define NBD_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct img;
struct nbd_server;

/* Largest READ/WRITE payload the server accepts (advertised as the
 * maximum block size). */
#define NBD_SERVER_MAX_PAYLOAD (32u << 20)

struct nbd_server_options {
	/* Simultaneous clients; further connections are refused. 0: no
	 * limit. */
	unsigned max_clients;
	/* Worker threads per connection (0: the default). */
	unsigned workers;
	/* TLS: both set means TLS is required of every client. */
	const char *tls_cert;
	const char *tls_key;
	/* One line per event (client connected, dropped, refused); may be
	 * NULL.  Called from any thread. */
	void (*log)(void *opaque, const char *line);
	void *log_opaque;
};

int nbd_server_new(struct nbd_server **out,
		   const struct nbd_server_options *opts, char *errbuf,
		   size_t errlen);
/* The image stays owned by the caller and must outlive the server.  The
 * empty name "" asks for the first export. */
int nbd_server_add_export(struct nbd_server *srv, const char *name,
			  const char *description, struct img *img,
			  bool read_only);
/* Listening sockets; all may be combined.  port 0 picks a free port,
 * reported by nbd_server_tcp_port(). */
int nbd_server_listen_tcp(struct nbd_server *srv, const char *addr,
			  const char *port, char *errbuf, size_t errlen);
int nbd_server_listen_unix(struct nbd_server *srv, const char *path,
			   char *errbuf, size_t errlen);
int nbd_server_tcp_port(struct nbd_server *srv);
/* Serve one already connected socket (tests, inetd style) in its own
 * thread; the server takes ownership of fd. */
int nbd_server_serve_fd(struct nbd_server *srv, int fd);
/* Accept clients until nbd_server_stop(); then disconnect every client
 * after its requests in flight are answered, and return. */
int nbd_server_run(struct nbd_server *srv);
/* Async-signal-safe. */
void nbd_server_stop(struct nbd_server *srv);
/* Waits for every client to finish; removes Unix sockets it created. */
void nbd_server_free(struct nbd_server *srv);

#endif
