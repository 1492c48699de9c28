/* SPDX-License-Identifier: MIT */
/*
 * NBD server lifecycle: exports, listening sockets, one thread per client
 * (handshake, then the request reader of transmission.c), clean stop.
 */
#include "nbd_internal.h"

#include "img.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* How long a client may take to pick an export. */
#define NBD_HANDSHAKE_TIMEOUT_SECONDS 60
/* At stop, how long clients get to take the replies still in flight. */
#define NBD_STOP_GRACE_SECONDS 10

void nbd_log(struct nbd_server *srv, const char *fmt, ...)
{
	char line[512];
	va_list ap;

	if (!srv->opts.log)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	srv->opts.log(srv->opts.log_opaque, line);
}

int nbd_server_new(struct nbd_server **out,
		   const struct nbd_server_options *opts, char *errbuf,
		   size_t errlen)
{
	struct nbd_server *srv = calloc(1, sizeof(*srv));
	int r;

	if (!srv) {
		snprintf(errbuf, errlen, "out of memory");
		return -ENOMEM;
	}
	if (opts)
		srv->opts = *opts;
	srv->exports_tail = &srv->exports;
	srv->stop_pipe[0] = srv->stop_pipe[1] = -1;
	pthread_mutex_init(&srv->lock, NULL);
	pthread_cond_init(&srv->idle, NULL);
	if (pipe2(srv->stop_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
		r = -errno;
		snprintf(errbuf, errlen, "pipe: %s", strerror(errno));
		goto fail;
	}
	if (srv->opts.tls_cert || srv->opts.tls_key) {
		if (!srv->opts.tls_cert || !srv->opts.tls_key) {
			snprintf(errbuf, errlen,
				 "TLS needs both a certificate and a key");
			r = -EINVAL;
			goto fail;
		}
		r = nbd_tls_context_new(&srv->tls_ctx, srv->opts.tls_cert,
					srv->opts.tls_key, errbuf, errlen);
		if (r < 0)
			goto fail;
	}
	*out = srv;
	return 0;
fail:
	nbd_server_free(srv);
	return r;
}

int nbd_server_add_export(struct nbd_server *srv, const char *name,
			  const char *description, struct img *img,
			  bool read_only)
{
	struct nbd_export *e;
	uint32_t cluster;

	/* The protocol caps names at 4096 bytes. */
	if (!name || strlen(name) > 4096)
		return -EINVAL;
	for (e = srv->exports; e; e = e->next)
		if (!strcmp(e->name, name))
			return -EEXIST;
	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->name = strdup(name);
	e->description = description ? strdup(description) : NULL;
	if (!e->name || (description && !e->description)) {
		free(e->name);
		free(e->description);
		free(e);
		return -ENOMEM;
	}
	e->img = img;
	e->read_only = read_only || !img_is_writable(img);
	e->size = img_size(img);
	/* Requests of a whole cluster avoid read-modify-write in the
	 * format; between 4 KiB and 2 MiB that is what we suggest. */
	cluster = img_cluster_size(img);
	e->preferred_block = 4096;
	if (cluster > 4096 && cluster <= (2u << 20) &&
	    !(cluster & (cluster - 1)))
		e->preferred_block = cluster;
	*srv->exports_tail = e;
	srv->exports_tail = &e->next;
	srv->nexports++;
	return 0;
}

static int nbd_listen_fd(struct nbd_server *srv, int fd, char *errbuf,
			 size_t errlen)
{
	if (srv->nlisten >=
	    (int)(sizeof(srv->listen_fds) / sizeof(srv->listen_fds[0]))) {
		snprintf(errbuf, errlen, "too many listening sockets");
		close(fd);
		return -EMFILE;
	}
	if (listen(fd, 128) < 0) {
		int r = -errno;
		snprintf(errbuf, errlen, "listen: %s", strerror(errno));
		close(fd);
		return r;
	}
	srv->listen_fds[srv->nlisten++] = fd;
	return 0;
}

int nbd_server_listen_tcp(struct nbd_server *srv, const char *addr,
			  const char *port, char *errbuf, size_t errlen)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC,
				  .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
	struct addrinfo *res = NULL, *ai;
	int r, n = 0, one = 1;

	/* Only the loopback address unless the user names another. */
	if (!addr)
		addr = "127.0.0.1";
	if (!port)
		port = "10809";
	r = getaddrinfo(addr, port, &hints, &res);
	if (r) {
		snprintf(errbuf, errlen, "%s port %s: %s", addr, port,
			 gai_strerror(r));
		return -EINVAL;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
				ai->ai_protocol);
		if (fd < 0) {
			r = -errno;
			snprintf(errbuf, errlen, "socket: %s", strerror(errno));
			continue;
		}
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (ai->ai_family == AF_INET6)
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one,
				   sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
			r = -errno;
			snprintf(errbuf, errlen, "bind %s port %s: %s", addr,
				 port, strerror(errno));
			close(fd);
			continue;
		}
		r = nbd_listen_fd(srv, fd, errbuf, errlen);
		if (r == 0)
			n++;
	}
	freeaddrinfo(res);
	return n ? 0 : (r ? r : -EADDRNOTAVAIL);
}

static char *nbd_absolute_path(const char *path)
{
	char cwd[4096];
	char *out = NULL;

	if (path[0] == '/' || !getcwd(cwd, sizeof(cwd)))
		return strdup(path);
	if (asprintf(&out, "%s/%s", cwd, path) < 0)
		return NULL;
	return out;
}

int nbd_server_listen_unix(struct nbd_server *srv, const char *path,
			   char *errbuf, size_t errlen)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct stat st;
	int fd, r;

	if (strlen(path) >= sizeof(sun.sun_path)) {
		snprintf(errbuf, errlen, "%s: socket path too long", path);
		return -ENAMETOOLONG;
	}
	strcpy(sun.sun_path, path);
	/* A stale socket from a previous run is replaced; any other file
	 * is left alone. */
	if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
		unlink(path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		r = -errno;
		snprintf(errbuf, errlen, "socket: %s", strerror(errno));
		return r;
	}
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		r = -errno;
		snprintf(errbuf, errlen, "%s: %s", path, strerror(errno));
		close(fd);
		return r;
	}
	/* Remembered absolute, to be removed at exit even after a daemon
	 * changed directory. */
	free(srv->unix_path);
	srv->unix_path = nbd_absolute_path(path);
	return nbd_listen_fd(srv, fd, errbuf, errlen);
}

int nbd_server_tcp_port(struct nbd_server *srv)
{
	for (int i = 0; i < srv->nlisten; i++) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		if (getsockname(srv->listen_fds[i], (struct sockaddr *)&ss,
				&len) < 0)
			continue;
		if (ss.ss_family == AF_INET)
			return ntohs(((struct sockaddr_in *)&ss)->sin_port);
		if (ss.ss_family == AF_INET6)
			return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	}
	return -ENOENT;
}

static void *nbd_conn_main(void *arg)
{
	struct nbd_conn *c = arg;
	struct nbd_server *srv = c->srv;

	/* A client gets a minute to negotiate; once in transmission it may
	 * stay idle as long as it likes. */
	struct timeval limit = { .tv_sec = NBD_HANDSHAKE_TIMEOUT_SECONDS };
	struct timeval none = { 0 };
	setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof(limit));
	if (nbd_handshake(c) == 1) {
		setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof(none));
		nbd_transmission(c);
	}
	nbd_tls_close(c);
	/* After the count drops, srv may be freed: log first. */
	nbd_log(srv, "client %s disconnected", c->peer);

	pthread_mutex_lock(&srv->lock);
	if (c->prev)
		c->prev->next = c->next;
	else
		srv->clients = c->next;
	if (c->next)
		c->next->prev = c->prev;
	close(c->fd);
	if (--srv->nclients == 0)
		pthread_cond_broadcast(&srv->idle);
	pthread_mutex_unlock(&srv->lock);

	pthread_mutex_destroy(&c->send_lock);
	free(c);
	return NULL;
}

static void nbd_peer_name(int fd, char *out, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char host[INET6_ADDRSTRLEN] = "?";

	snprintf(out, len, "local");
	if (getpeername(fd, (struct sockaddr *)&ss, &sl) < 0)
		return;
	if (ss.ss_family == AF_INET) {
		struct sockaddr_in *s = (struct sockaddr_in *)&ss;
		inet_ntop(AF_INET, &s->sin_addr, host, sizeof(host));
		snprintf(out, len, "%s:%u", host, ntohs(s->sin_port));
	} else if (ss.ss_family == AF_INET6) {
		struct sockaddr_in6 *s = (struct sockaddr_in6 *)&ss;
		inet_ntop(AF_INET6, &s->sin6_addr, host, sizeof(host));
		snprintf(out, len, "[%s]:%u", host, ntohs(s->sin6_port));
	}
}

int nbd_server_serve_fd(struct nbd_server *srv, int fd)
{
	struct nbd_conn *c;
	pthread_attr_t attr;
	pthread_t tid;
	int one = 1, r;

	pthread_mutex_lock(&srv->lock);
	if (srv->stopping ||
	    (srv->opts.max_clients && srv->nclients >= srv->opts.max_clients)) {
		bool stopping = srv->stopping;
		pthread_mutex_unlock(&srv->lock);
		if (!stopping)
			nbd_log(srv, "client refused: already %u clients",
				srv->opts.max_clients);
		close(fd);
		return -EBUSY;
	}
	pthread_mutex_unlock(&srv->lock);

	c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return -ENOMEM;
	}
	c->srv = srv;
	c->fd = fd;
	pthread_mutex_init(&c->send_lock, NULL);
	/* Replies are whole messages sent with one sendmsg: no need to wait
	 * for more bytes (Nagle) before sending. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	nbd_peer_name(fd, c->peer, sizeof(c->peer));
	nbd_log(srv, "client %s connected", c->peer);

	pthread_mutex_lock(&srv->lock);
	c->next = srv->clients;
	if (c->next)
		c->next->prev = c;
	srv->clients = c;
	srv->nclients++;
	pthread_mutex_unlock(&srv->lock);

	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	r = pthread_create(&tid, &attr, nbd_conn_main, c);
	pthread_attr_destroy(&attr);
	if (r) {
		pthread_mutex_lock(&srv->lock);
		if (c->next)
			c->next->prev = NULL;
		srv->clients = c->next;
		if (--srv->nclients == 0)
			pthread_cond_broadcast(&srv->idle);
		pthread_mutex_unlock(&srv->lock);
		close(fd);
		pthread_mutex_destroy(&c->send_lock);
		free(c);
		return -r;
	}
	return 0;
}

/* Stop taking requests from every client: their readers see EOF, answer
 * what is in flight and end.  Clients that do not take their replies
 * within the grace period are cut off completely. */
static void nbd_server_disconnect_all(struct nbd_server *srv)
{
	struct timespec deadline;
	bool cut = false;

	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += NBD_STOP_GRACE_SECONDS;
	pthread_mutex_lock(&srv->lock);
	srv->stopping = true;
	for (struct nbd_conn *c = srv->clients; c; c = c->next)
		shutdown(c->fd, SHUT_RD);
	while (srv->nclients) {
		if (cut) {
			pthread_cond_wait(&srv->idle, &srv->lock);
			continue;
		}
		if (pthread_cond_timedwait(&srv->idle, &srv->lock, &deadline) ==
		    ETIMEDOUT) {
			for (struct nbd_conn *c = srv->clients; c; c = c->next)
				shutdown(c->fd, SHUT_RDWR);
			cut = true;
		}
	}
	pthread_mutex_unlock(&srv->lock);
}

int nbd_server_run(struct nbd_server *srv)
{
	struct pollfd pfd[17];
	int n = srv->nlisten;

	for (int i = 0; i < n; i++)
		pfd[i] = (struct pollfd){ .fd = srv->listen_fds[i],
					  .events = POLLIN };
	pfd[n] = (struct pollfd){ .fd = srv->stop_pipe[0], .events = POLLIN };
	for (;;) {
		if (poll(pfd, (nfds_t)n + 1, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pfd[n].revents)
			break;
		for (int i = 0; i < n; i++) {
			if (!(pfd[i].revents & POLLIN))
				continue;
			int fd = accept4(pfd[i].fd, NULL, NULL, SOCK_CLOEXEC);
			if (fd < 0)
				continue;
			nbd_server_serve_fd(srv, fd);
		}
	}
	nbd_server_disconnect_all(srv);
	return 0;
}

void nbd_server_stop(struct nbd_server *srv)
{
	int saved = errno;

	if (write(srv->stop_pipe[1], "x", 1) < 0) {
		/* full pipe: a stop is already pending */
	}
	errno = saved;
}

void nbd_server_free(struct nbd_server *srv)
{
	struct nbd_export *e, *next;

	if (!srv)
		return;
	nbd_server_disconnect_all(srv);
	for (int i = 0; i < srv->nlisten; i++)
		close(srv->listen_fds[i]);
	if (srv->unix_path) {
		unlink(srv->unix_path);
		free(srv->unix_path);
	}
	for (int i = 0; i < 2; i++)
		if (srv->stop_pipe[i] >= 0)
			close(srv->stop_pipe[i]);
	for (e = srv->exports; e; e = next) {
		next = e->next;
		free(e->name);
		free(e->description);
		free(e);
	}
	if (srv->tls_ctx)
		nbd_tls_context_free(srv->tls_ctx);
	pthread_cond_destroy(&srv->idle);
	pthread_mutex_destroy(&srv->lock);
	free(srv);
}
