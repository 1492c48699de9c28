// SPDX-License-Identifier: MIT
/*
 * imgvm: a host TAP interface as the guest's wire (Linux tun/tap, IFF_TAP
 * without packet information).  The interface is the user's to create and
 * bridge (ip tuntap add tap0 mode tap user $USER); a thread reads frames
 * from it for the guest.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "vmm/net/net.h"

struct net_tap {
	struct net_backend be;
	int fd;
	int stop_fd;
	pthread_t thread;
	bool started;
	uint8_t frame[NET_MAX_FRAME];
};

static void *tap_thread(void *opaque)
{
	struct net_tap *tap = opaque;

	for (;;) {
		struct pollfd p[2] = { { .fd = tap->fd, .events = POLLIN },
				       { .fd = tap->stop_fd,
					 .events = POLLIN } };
		ssize_t n;

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[1].revents)
			break;
		if (!(p[0].revents & POLLIN)) {
			if (p[0].revents & (POLLERR | POLLHUP | POLLNVAL))
				break;
			continue;
		}
		n = read(tap->fd, tap->frame, sizeof(tap->frame));
		if (n > 0)
			tap->be.receive(tap->be.receive_opaque, tap->frame, n);
		else if (n < 0 && errno != EAGAIN && errno != EINTR)
			break;
	}
	return NULL;
}

static int tap_start(struct net_backend *be, char *err, size_t errlen)
{
	struct net_tap *tap = (struct net_tap *)be;
	int ret = pthread_create(&tap->thread, NULL, tap_thread, tap);

	if (ret) {
		snprintf(err, errlen, "--net tap: cannot start a thread: %s",
			 strerror(ret));
		return -ret;
	}
	tap->started = true;
	return 0;
}

static void tap_send(struct net_backend *be, const void *frame, size_t len)
{
	struct net_tap *tap = (struct net_tap *)be;

	/* a full interface queue drops the frame, as a wire would */
	if (write(tap->fd, frame, len) < 0)
		return;
}

static void tap_close(struct net_backend *be)
{
	struct net_tap *tap = (struct net_tap *)be;
	uint64_t one = 1;

	if (tap->started) {
		if (write(tap->stop_fd, &one, sizeof(one)) < 0)
			one = 0;
		pthread_join(tap->thread, NULL);
	}
	if (tap->fd >= 0)
		close(tap->fd);
	if (tap->stop_fd >= 0)
		close(tap->stop_fd);
	free(tap);
}

static const struct net_backend_ops tap_ops = {
	.start = tap_start,
	.send = tap_send,
	.close = tap_close,
};

struct net_backend *net_tap_open(const struct net_config *cfg, char *err,
				 size_t errlen)
{
	struct net_tap *tap = calloc(1, sizeof(*tap));
	struct ifreq ifr = { .ifr_flags = IFF_TAP | IFF_NO_PI };

	if (!tap) {
		snprintf(err, errlen, "--net tap: out of memory");
		return NULL;
	}
	tap->be.ops = &tap_ops;
	tap->stop_fd = eventfd(0, EFD_CLOEXEC);
	tap->fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
	if (tap->fd < 0 || tap->stop_fd < 0) {
		snprintf(err, errlen, "--net tap: /dev/net/tun: %s",
			 strerror(errno));
		goto fail;
	}
	if (strlen(cfg->ifname) >= sizeof(ifr.ifr_name)) {
		snprintf(err, errlen, "--net tap: interface name too long");
		goto fail;
	}
	strcpy(ifr.ifr_name, cfg->ifname);
	if (ioctl(tap->fd, TUNSETIFF, &ifr) < 0) {
		snprintf(err, errlen,
			 "--net tap: cannot attach to %s: %s (create it first: "
			 "ip tuntap add %s mode tap user $USER)",
			 cfg->ifname, strerror(errno), cfg->ifname);
		goto fail;
	}
	return &tap->be;
fail:
	tap_close(&tap->be);
	return NULL;
}
