// SPDX-License-Identifier: MIT
/*
 * imgvm: user-mode networking through libslirp, like QEMU's -nic user:
 * the guest is on 10.0.2.0/24 with a gateway at 10.0.2.2, DNS at 10.0.2.3
 * and its DHCP address at 10.0.2.15; its connections become the host's
 * own sockets (NAT).  restrict=on keeps it from everything but the
 * forwards.
 *
 * libslirp is not thread-safe: one lock covers every call into it.  Its
 * sockets and timers run on a thread of ours with its own poll set; the
 * vCPU that sends a frame takes the lock for slirp_input and wakes that
 * thread, since the frame may have opened a socket it must now watch.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <slirp/libslirp.h>

#include "vmm/net/net.h"

struct slirp_timer {
	SlirpTimerCb cb;
	void *cb_opaque;
	int64_t expire_ms; /* -1: not armed */
	struct slirp_timer *next;
};

struct net_slirp {
	struct net_backend be;
	Slirp *slirp;
	pthread_mutex_t lock;
	pthread_t thread;
	bool started;
	bool stop;
	int wake_fd;
	struct pollfd *pfds;
	size_t pfd_count, pfd_capacity;
	struct slirp_timer *timers;
};

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- callbacks (lock held: libslirp only calls back from our calls) ----*/

static ssize_t cb_send_packet(const void *buf, size_t len, void *opaque)
{
	struct net_slirp *ns = opaque;

	if (ns->be.receive)
		ns->be.receive(ns->be.receive_opaque, buf, len);
	return len;
}

static void cb_guest_error(const char *msg, void *opaque)
{
	/* a guest sending malformed packets is the guest's business */
	(void)msg;
	(void)opaque;
}

static int64_t cb_clock_get_ns(void *opaque)
{
	(void)opaque;
	return now_ns();
}

static void *cb_timer_new(SlirpTimerCb cb, void *cb_opaque, void *opaque)
{
	struct net_slirp *ns = opaque;
	struct slirp_timer *t = calloc(1, sizeof(*t));

	if (!t)
		abort(); /* libslirp has no way to take a failure here */
	t->cb = cb;
	t->cb_opaque = cb_opaque;
	t->expire_ms = -1;
	t->next = ns->timers;
	ns->timers = t;
	return t;
}

static void cb_timer_free(void *timer, void *opaque)
{
	struct net_slirp *ns = opaque;

	for (struct slirp_timer **p = &ns->timers; *p; p = &(*p)->next) {
		if (*p == timer) {
			*p = ((struct slirp_timer *)timer)->next;
			free(timer);
			return;
		}
	}
}

static void cb_timer_mod(void *timer, int64_t expire_ms, void *opaque)
{
	struct net_slirp *ns = opaque;
	uint64_t one = 1;

	((struct slirp_timer *)timer)->expire_ms = expire_ms;
	/* the poll timeout may need to shrink */
	if (write(ns->wake_fd, &one, sizeof(one)) < 0)
		return;
}

static void cb_register_poll_fd(int fd, void *opaque)
{
	(void)fd;
	(void)opaque;
}

static void cb_unregister_poll_fd(int fd, void *opaque)
{
	(void)fd;
	(void)opaque;
}

static void cb_notify(void *opaque)
{
	struct net_slirp *ns = opaque;
	uint64_t one = 1;

	if (write(ns->wake_fd, &one, sizeof(one)) < 0)
		return;
}

static const SlirpCb slirp_callbacks = {
	.send_packet = cb_send_packet,
	.guest_error = cb_guest_error,
	.clock_get_ns = cb_clock_get_ns,
	.timer_new = cb_timer_new,
	.timer_free = cb_timer_free,
	.timer_mod = cb_timer_mod,
	.register_poll_fd = cb_register_poll_fd,
	.unregister_poll_fd = cb_unregister_poll_fd,
	.notify = cb_notify,
};

/* ---- the poll thread -----------------------------------------------------*/

static int add_poll(int fd, int events, void *opaque)
{
	struct net_slirp *ns = opaque;
	struct pollfd *p;

	if (ns->pfd_count == ns->pfd_capacity) {
		size_t cap = ns->pfd_capacity ? 2 * ns->pfd_capacity : 32;
		struct pollfd *grown = realloc(ns->pfds, cap * sizeof(*grown));

		if (!grown)
			return -1;
		ns->pfds = grown;
		ns->pfd_capacity = cap;
	}
	p = &ns->pfds[ns->pfd_count];
	p->fd = fd;
	p->events = (events & SLIRP_POLL_IN ? POLLIN : 0) |
		    (events & SLIRP_POLL_OUT ? POLLOUT : 0) |
		    (events & SLIRP_POLL_PRI ? POLLPRI : 0);
	p->revents = 0;
	return ns->pfd_count++;
}

static int get_revents(int idx, void *opaque)
{
	struct net_slirp *ns = opaque;
	short r;

	if (idx < 0 || (size_t)idx >= ns->pfd_count)
		return 0;
	r = ns->pfds[idx].revents;
	return (r & POLLIN ? SLIRP_POLL_IN : 0) |
	       (r & POLLOUT ? SLIRP_POLL_OUT : 0) |
	       (r & POLLPRI ? SLIRP_POLL_PRI : 0) |
	       (r & (POLLERR | POLLNVAL) ? SLIRP_POLL_ERR : 0) |
	       (r & POLLHUP ? SLIRP_POLL_HUP : 0);
}

/* Fire expired timers; returns ms until the next one (or limit). */
static uint32_t run_timers(struct net_slirp *ns, uint32_t limit)
{
	int64_t now = now_ns() / 1000000;
	bool fired;

	do {
		fired = false;
		for (struct slirp_timer *t = ns->timers; t; t = t->next) {
			if (t->expire_ms >= 0 && t->expire_ms <= now) {
				t->expire_ms = -1;
				/* the callback may free or add timers */
				t->cb(t->cb_opaque);
				fired = true;
				break;
			}
		}
	} while (fired);
	for (struct slirp_timer *t = ns->timers; t; t = t->next)
		if (t->expire_ms >= 0 && t->expire_ms - now < limit)
			limit = t->expire_ms - now;
	return limit;
}

static void *slirp_thread(void *opaque)
{
	struct net_slirp *ns = opaque;

	pthread_mutex_lock(&ns->lock);
	while (!ns->stop) {
		uint32_t timeout = run_timers(ns, 1000);
		int ret;

		ns->pfd_count = 0;
		add_poll(ns->wake_fd, SLIRP_POLL_IN, ns);
		slirp_pollfds_fill(ns->slirp, &timeout, add_poll, ns);
		pthread_mutex_unlock(&ns->lock);
		ret = poll(ns->pfds, ns->pfd_count, timeout);
		pthread_mutex_lock(&ns->lock);
		if (ret > 0 && ns->pfds[0].revents & POLLIN) {
			uint64_t count;

			if (read(ns->wake_fd, &count, sizeof(count)) < 0)
				count = 0;
		}
		slirp_pollfds_poll(ns->slirp, ret < 0, get_revents, ns);
	}
	pthread_mutex_unlock(&ns->lock);
	return NULL;
}

/* ---- backend operations ----------------------------------------------------*/

static int slirp_start(struct net_backend *be, char *err, size_t errlen)
{
	struct net_slirp *ns = (struct net_slirp *)be;
	int ret = pthread_create(&ns->thread, NULL, slirp_thread, ns);

	if (ret) {
		snprintf(err, errlen, "--net user: cannot start a thread: %s",
			 strerror(ret));
		return -ret;
	}
	ns->started = true;
	return 0;
}

static void slirp_send(struct net_backend *be, const void *frame, size_t len)
{
	struct net_slirp *ns = (struct net_slirp *)be;
	uint64_t one = 1;

	pthread_mutex_lock(&ns->lock);
	slirp_input(ns->slirp, frame, len);
	pthread_mutex_unlock(&ns->lock);
	if (write(ns->wake_fd, &one, sizeof(one)) < 0)
		return;
}

static void slirp_close(struct net_backend *be)
{
	struct net_slirp *ns = (struct net_slirp *)be;
	uint64_t one = 1;

	if (ns->started) {
		pthread_mutex_lock(&ns->lock);
		ns->stop = true;
		pthread_mutex_unlock(&ns->lock);
		if (write(ns->wake_fd, &one, sizeof(one)) < 0)
			one = 0;
		pthread_join(ns->thread, NULL);
	}
	if (ns->slirp)
		slirp_cleanup(ns->slirp);
	while (ns->timers) {
		struct slirp_timer *t = ns->timers;

		ns->timers = t->next;
		free(t);
	}
	if (ns->wake_fd >= 0)
		close(ns->wake_fd);
	pthread_mutex_destroy(&ns->lock);
	free(ns->pfds);
	free(ns);
}

static const struct net_backend_ops slirp_ops = {
	.start = slirp_start,
	.send = slirp_send,
	.close = slirp_close,
};

static int add_forwards(struct net_slirp *ns, const struct net_config *cfg,
			char *err, size_t errlen)
{
	for (unsigned i = 0; i < cfg->hostfwd_count; i++) {
		const struct net_hostfwd *f = &cfg->hostfwd[i];

		if (slirp_add_hostfwd(ns->slirp, f->udp, f->host_addr,
				      f->host_port, f->guest_addr,
				      f->guest_port) < 0) {
			snprintf(err, errlen,
				 "--net user: hostfwd %s:%s:%u: cannot listen "
				 "there (port in use?)",
				 f->udp ? "udp" : "tcp",
				 inet_ntoa(f->host_addr), f->host_port);
			return -EADDRINUSE;
		}
	}
	for (unsigned i = 0; i < cfg->guestfwd_count; i++) {
		const struct net_guestfwd *f = &cfg->guestfwd[i];
		struct in_addr addr = f->addr;
		int ret = f->command ? slirp_add_exec(ns->slirp, f->command,
						      &addr, f->port)
				     : slirp_add_unix(ns->slirp, f->unix_path,
						      &addr, f->port);

		if (ret < 0) {
			snprintf(err, errlen,
				 "--net user: guestfwd %s:%u: the address must "
				 "be in 10.0.2.0/24 and not in use",
				 inet_ntoa(f->addr), f->port);
			return -EINVAL;
		}
	}
	return 0;
}

struct net_backend *net_slirp_open(const struct net_config *cfg, char *err,
				   size_t errlen)
{
	struct net_slirp *ns = calloc(1, sizeof(*ns));
	SlirpConfig sc = { .version = 4 };

	if (!ns) {
		snprintf(err, errlen, "--net user: out of memory");
		return NULL;
	}
	ns->be.ops = &slirp_ops;
	ns->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	pthread_mutex_init(&ns->lock, NULL);
	if (ns->wake_fd < 0) {
		snprintf(err, errlen, "--net user: eventfd: %s",
			 strerror(errno));
		goto fail;
	}
	sc.restricted = cfg->restricted;
	sc.in_enabled = true;
	inet_aton("10.0.2.0", &sc.vnetwork);
	inet_aton("255.255.255.0", &sc.vnetmask);
	inet_aton("10.0.2.2", &sc.vhost);
	inet_aton("10.0.2.15", &sc.vdhcp_start);
	inet_aton("10.0.2.3", &sc.vnameserver);
	sc.in6_enabled = false;
	sc.vhostname = NULL;
	sc.tftp_server_name = NULL;
	sc.tftp_path = cfg->tftp_dir;
	sc.bootfile = cfg->bootfile;
	ns->slirp = slirp_new(&sc, &slirp_callbacks, ns);
	if (!ns->slirp) {
		snprintf(err, errlen, "--net user: libslirp refused the setup");
		goto fail;
	}
	if (add_forwards(ns, cfg, err, errlen))
		goto fail;
	return &ns->be;
fail:
	slirp_close(&ns->be);
	return NULL;
}
