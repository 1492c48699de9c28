// SPDX-License-Identifier: MIT
/*
 * imgvm: the --net option and the choice of backend.  The syntax follows
 * QEMU's -nic user / -nic tap where the two overlap, so that users can
 * carry their forwards over.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/net/net.h"

/* QEMU's default: 52:54:00:12:34:56 */
static const uint8_t default_mac[6] = { 0x52, 0x54, 0x00, 0x12, 0x34, 0x56 };

static int parse_mac(const char *text, uint8_t mac[6])
{
	unsigned v[6];
	char tail;

	if (sscanf(text, "%2x:%2x:%2x:%2x:%2x:%2x%c", &v[0], &v[1], &v[2],
		   &v[3], &v[4], &v[5], &tail) != 6)
		return -EINVAL;
	for (int i = 0; i < 6; i++)
		mac[i] = v[i];
	/* a unicast address: the guest would drop its own traffic else */
	return mac[0] & 1 ? -EINVAL : 0;
}

static int parse_port(const char *text, uint16_t *port)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(text, &end, 10);
	if (errno || end == text || *end || v > 65535)
		return -EINVAL;
	*port = v;
	return 0;
}

/* "ADDR:PORT" with ADDR possibly empty (then `any`); modifies text. */
static int parse_addr_port(char *text, struct in_addr *addr, uint16_t *port,
			   bool need_port)
{
	char *colon = strrchr(text, ':');

	if (!colon)
		return -EINVAL;
	*colon = 0;
	if (*text && !inet_aton(text, addr))
		return -EINVAL;
	if (parse_port(colon + 1, port) || (need_port && !*port))
		return -EINVAL;
	return 0;
}

/* hostfwd=[tcp|udp]:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT */
static int parse_hostfwd(struct net_config *cfg, char *text, char *err,
			 size_t errlen)
{
	struct net_hostfwd *fwd = &cfg->hostfwd[cfg->hostfwd_count];
	char *dash;

	if (cfg->hostfwd_count == NET_MAX_FORWARDS) {
		snprintf(err, errlen, "at most %d hostfwd", NET_MAX_FORWARDS);
		return -EINVAL;
	}
	memset(fwd, 0, sizeof(*fwd));
	fwd->host_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (!strncmp(text, "tcp:", 4)) {
		text += 4;
	} else if (!strncmp(text, "udp:", 4)) {
		fwd->udp = true;
		text += 4;
	} else if (*text == ':') {
		text++;
	}
	dash = strchr(text, '-');
	if (!dash)
		goto bad;
	*dash = 0;
	if (parse_addr_port(text, &fwd->host_addr, &fwd->host_port, true) ||
	    parse_addr_port(dash + 1, &fwd->guest_addr, &fwd->guest_port, true))
		goto bad;
	cfg->hostfwd_count++;
	return 0;
bad:
	snprintf(err, errlen,
		 "hostfwd must be [tcp|udp]:[HOSTADDR]:PORT-[GUESTADDR]:PORT");
	return -EINVAL;
}

/* guestfwd=tcp:ADDR:PORT-cmd:COMMAND or ...-unix:PATH.  A comma ends
 * COMMAND: longer commands go in a script. */
static int parse_guestfwd(struct net_config *cfg, char *text, char *err,
			  size_t errlen)
{
	struct net_guestfwd *fwd = &cfg->guestfwd[cfg->guestfwd_count];
	char *dash;

	if (cfg->guestfwd_count == NET_MAX_FORWARDS) {
		snprintf(err, errlen, "at most %d guestfwd", NET_MAX_FORWARDS);
		return -EINVAL;
	}
	memset(fwd, 0, sizeof(*fwd));
	if (!strncmp(text, "tcp:", 4))
		text += 4;
	else if (*text == ':')
		text++;
	dash = strchr(text, '-');
	if (!dash)
		goto bad;
	*dash = 0;
	/* slirp serves guest forwards inside its own network only */
	if (parse_addr_port(text, &fwd->addr, &fwd->port, true) ||
	    (ntohl(fwd->addr.s_addr) & 0xffffff00u) != 0x0a000200u) {
		snprintf(err, errlen,
			 "guestfwd: the address must be in 10.0.2.0/24");
		return -EINVAL;
	}
	if (!strncmp(dash + 1, "cmd:", 4) && dash[5])
		fwd->command = dash + 5;
	else if (!strncmp(dash + 1, "unix:", 5) && dash[6])
		fwd->unix_path = dash + 6;
	else
		goto bad;
	cfg->guestfwd_count++;
	return 0;
bad:
	snprintf(err, errlen,
		 "guestfwd must be tcp:ADDR:PORT-cmd:COMMAND or "
		 "tcp:ADDR:PORT-unix:PATH");
	return -EINVAL;
}

int net_config_parse(struct net_config *cfg, const char *spec, char *err,
		     size_t errlen)
{
	char *save = NULL, *part;

	memset(cfg, 0, sizeof(*cfg));
	memcpy(cfg->mac, default_mac, 6);
	cfg->text = strdup(spec);
	if (!cfg->text) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	part = strtok_r(cfg->text, ",", &save);
	if (part && !strcmp(part, "user")) {
		cfg->kind = NET_USER;
	} else if (part && !strcmp(part, "tap")) {
		cfg->kind = NET_TAP;
	} else {
		snprintf(err, errlen, "the backend must be user or tap");
		goto fail;
	}
	while ((part = strtok_r(NULL, ",", &save))) {
		char *value = strchr(part, '=');
		bool user_only = true;

		if (!value) {
			snprintf(err, errlen, "'%s' is not NAME=VALUE", part);
			goto fail;
		}
		*value++ = 0;
		if (!strcmp(part, "mac")) {
			user_only = false;
			if (parse_mac(value, cfg->mac)) {
				snprintf(err, errlen,
					 "mac must be a unicast "
					 "XX:XX:XX:XX:XX:XX");
				goto fail;
			}
		} else if (!strcmp(part, "model")) {
			user_only = false;
			if (!strcmp(value, "virtio-modern")) {
				cfg->modern_only = true;
			} else if (strcmp(value, "virtio") &&
				   strcmp(value, "virtio-net-pci")) {
				snprintf(err, errlen,
					 "model must be virtio or "
					 "virtio-modern");
				goto fail;
			}
		} else if (!strcmp(part, "ifname")) {
			user_only = false;
			if (cfg->kind != NET_TAP || !*value) {
				snprintf(err, errlen, "ifname= belongs to tap");
				goto fail;
			}
			cfg->ifname = value;
		} else if (!strcmp(part, "restrict")) {
			if (strcmp(value, "on") && strcmp(value, "off") &&
			    strcmp(value, "yes") && strcmp(value, "no")) {
				snprintf(err, errlen,
					 "restrict must be on or off");
				goto fail;
			}
			cfg->restricted = !strcmp(value, "on") ||
					  !strcmp(value, "yes");
		} else if (!strcmp(part, "hostfwd")) {
			if (parse_hostfwd(cfg, value, err, errlen))
				goto fail;
		} else if (!strcmp(part, "guestfwd")) {
			if (parse_guestfwd(cfg, value, err, errlen))
				goto fail;
		} else if (!strcmp(part, "tftp") && *value) {
			cfg->tftp_dir = value;
		} else if (!strcmp(part, "bootfile") && *value) {
			cfg->bootfile = value;
		} else {
			snprintf(err, errlen, "unknown option '%s'", part);
			goto fail;
		}
		if (user_only && cfg->kind != NET_USER) {
			snprintf(err, errlen, "%s= belongs to user", part);
			goto fail;
		}
	}
	if (cfg->kind == NET_TAP && !cfg->ifname) {
		snprintf(err, errlen, "tap needs ifname=NAME");
		goto fail;
	}
	return 0;
fail:
	net_config_free(cfg);
	return -EINVAL;
}

void net_config_free(struct net_config *cfg)
{
	free(cfg->text);
	cfg->text = NULL;
}

struct net_backend *net_backend_open(const struct net_config *cfg, char *err,
				     size_t errlen)
{
	switch (cfg->kind) {
	case NET_USER:
		return net_slirp_open(cfg, err, errlen);
	case NET_TAP:
		return net_tap_open(cfg, err, errlen);
	}
	snprintf(err, errlen, "unknown network backend");
	return NULL;
}

int net_backend_start(struct net_backend *be, net_receive_fn receive,
		      void *opaque, char *err, size_t errlen)
{
	be->receive = receive;
	be->receive_opaque = opaque;
	return be->ops->start ? be->ops->start(be, err, errlen) : 0;
}

void net_backend_send(struct net_backend *be, const void *frame, size_t len)
{
	be->ops->send(be, frame, len);
}

void net_backend_close(struct net_backend *be)
{
	if (be)
		be->ops->close(be);
}
