/* SPDX-License-Identifier: MIT */
/*
 * imgvm: network backends.  A network card hands the frames its guest
 * sends to a backend and takes the frames the backend receives; it never
 * knows which backend it talks to.  Backends: user-mode networking through
 * libslirp (vmm/net/slirp.c) and a host TAP interface (vmm/net/tap.c).
 *
 * Threads: net_backend_send runs on the card's thread (a vCPU); the
 * receive callback runs on the backend's own thread.  The card must not
 * hold a lock across net_backend_send that its receive callback takes.
 */
#ifndef IMGVM_NET_H
#define IMGVM_NET_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NET_MAX_FORWARDS 16
/* The largest frame either way: an Ethernet frame of a 64 KiB packet. */
#define NET_MAX_FRAME 65550

enum net_kind {
	NET_USER,
	NET_TAP,
};

struct net_hostfwd {
	bool udp;
	struct in_addr host_addr;
	uint16_t host_port;
	struct in_addr guest_addr; /* 0.0.0.0: the guest's DHCP address */
	uint16_t guest_port;
};

struct net_guestfwd {
	struct in_addr addr;
	uint16_t port;
	const char *command;   /* cmd:COMMAND: run per connection */
	const char *unix_path; /* unix:PATH: connect to a local socket */
};

/* What --net says. */
struct net_config {
	enum net_kind kind;
	uint8_t mac[6];
	bool restricted;
	unsigned hostfwd_count;
	struct net_hostfwd hostfwd[NET_MAX_FORWARDS];
	unsigned guestfwd_count;
	struct net_guestfwd guestfwd[NET_MAX_FORWARDS];
	const char *tftp_dir;
	const char *bootfile;
	const char *ifname;
	bool modern_only; /* model=virtio-modern: 1af4:1041, no legacy I/O */
	char *text; /* the option, split in place; freed by net_config_free */
};

/* Parses "user[,OPTION...]" or "tap,ifname=NAME[,OPTION...]"; a message
 * in err on failure. */
int net_config_parse(struct net_config *cfg, const char *spec, char *err,
		     size_t errlen);
void net_config_free(struct net_config *cfg);

/* A frame for the guest (no FCS).  Called on the backend's thread. */
typedef void (*net_receive_fn)(void *opaque, const void *frame, size_t len);

struct net_backend;
struct net_backend_ops {
	/* Start delivering frames (own thread from here on). */
	int (*start)(struct net_backend *be, char *err, size_t errlen);
	void (*send)(struct net_backend *be, const void *frame, size_t len);
	void (*close)(struct net_backend *be);
};

struct net_backend {
	const struct net_backend_ops *ops;
	net_receive_fn receive;
	void *receive_opaque;
};

struct net_backend *net_backend_open(const struct net_config *cfg, char *err,
				     size_t errlen);
int net_backend_start(struct net_backend *be, net_receive_fn receive,
		      void *opaque, char *err, size_t errlen);
void net_backend_send(struct net_backend *be, const void *frame, size_t len);
/* Stops the backend's thread and frees it. */
void net_backend_close(struct net_backend *be);

struct net_backend *net_slirp_open(const struct net_config *cfg, char *err,
				   size_t errlen);
struct net_backend *net_tap_open(const struct net_config *cfg, char *err,
				 size_t errlen);

#endif
