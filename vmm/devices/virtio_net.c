// SPDX-License-Identifier: MIT
/*
 * virtio-net (virtio 1.0 section 5.1): queue 0 receives, queue 1
 * transmits; the MAC and link status are in the device config.  No
 * offloads are offered (the backends see plain frames), so every frame
 * fits one MTU-sized buffer; mergeable receive buffers are offered anyway
 * because Linux then posts page-sized buffers and refills less often.
 *
 * Receive runs on the backend's thread, transmit on the vCPU that kicked
 * the queue; the transport lock covers the queues, and is dropped while a
 * frame goes to the backend (which may loop a reply straight back).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/devices/virtio_net.h"
#include "vmm/devices/virtio_pci.h"
#include "vmm/net/net.h"

#define VIRTIO_ID_NET 1
#define VIRTIO_NET_F_MAC 5
#define VIRTIO_NET_F_MRG_RXBUF 15
#define VIRTIO_NET_F_STATUS 16
#define VIRTIO_NET_S_LINK_UP 1
#define VIRTIO_NET_QUEUE_SIZE 256
#define VIRTIO_NET_CONFIG_SIZE 8 /* mac[6], status */
/* struct virtio_net_hdr: 10 bytes, 12 with num_buffers (VERSION_1 or
 * MRG_RXBUF) */
#define NET_HDR_LEGACY 10
#define NET_HDR 12
#define NET_HDR_NUM_BUFFERS 10
/* Frames held while the guest has no receive buffers posted. */
#define RX_PENDING_MAX 256
#define ETH_MIN_FRAME 14
/* Buffers one received frame may take with mergeable buffers. */
#define RX_MAX_BUFFERS 64

struct pending_frame {
	size_t len;
	uint8_t data[];
};

struct virtio_net {
	struct virtio_pci *vp;
	struct net_backend *backend;
	uint8_t mac[6];
	bool link_up;
	/* scratch, under the transport lock */
	struct virtq_chain *rx_chain_first;
	struct virtq_chain *rx_chain_rest;
	struct virtq_chain *tx_chain;
	pthread_mutex_t tx_lock;
	uint8_t *tx_frame;
	/* receive backlog: a ring of frames, oldest at pending_head */
	struct pending_frame *pending[RX_PENDING_MAX];
	unsigned pending_head, pending_count;
	uint64_t rx_dropped;
};

static size_t header_len(struct virtio_net *net)
{
	return virtio_pci_has_feature(net->vp, VIRTIO_F_VERSION_1) ||
			       virtio_pci_has_feature(net->vp,
						      VIRTIO_NET_F_MRG_RXBUF)
		       ? NET_HDR
		       : NET_HDR_LEGACY;
}

static void broken(struct virtio_net *net, unsigned queue, const char *why)
{
	char reason[200];

	snprintf(reason, sizeof(reason), "virtio-net %s queue: %s",
		 queue == VIRTIO_NET_RX_QUEUE ? "receive" : "transmit", why);
	virtio_pci_set_broken(net->vp, reason);
}

/* ---- receive -------------------------------------------------------------*/

/* Put one frame into the guest's receive buffers.  1: delivered (or
 * dropped as too large for the buffer); 0: no buffers now; -EIO: broken.
 * Without mergeable buffers a frame takes one chain; with them, as many
 * as it needs, and the first chain's header counts them. */
static int rx_deliver(struct virtio_net *net, const void *frame, size_t len)
{
	struct virtq *vq = virtio_pci_queue(net->vp, VIRTIO_NET_RX_QUEUE);
	bool mergeable =
		virtio_pci_has_feature(net->vp, VIRTIO_NET_F_MRG_RXBUF);
	size_t hdr = header_len(net), total = hdr + len, done = 0;
	uint8_t header[NET_HDR] = { 0 };
	uint16_t heads[RX_MAX_BUFFERS];
	uint32_t lens[RX_MAX_BUFFERS];
	unsigned used = 0;
	char err[160];

	while (done < total && used < RX_MAX_BUFFERS) {
		struct virtq_chain *c = used ? net->rx_chain_rest
					     : net->rx_chain_first;
		size_t n;
		int ret = virtq_pop(vq, c, err, sizeof(err));

		if (ret < 0) {
			broken(net, VIRTIO_NET_RX_QUEUE, err);
			return -EIO;
		}
		if (ret == 0)
			break;
		if (c->out_count || (!used && c->in_len < hdr)) {
			broken(net, VIRTIO_NET_RX_QUEUE,
			       c->out_count ? "receive buffer with "
					      "device-readable parts"
					    : "receive buffer shorter than "
					      "the header");
			return -EIO;
		}
		n = c->in_len < total - done ? c->in_len : total - done;
		if (!used)
			virtq_copy_to_in(c, hdr, frame, n - hdr);
		else
			virtq_copy_to_in(
				c, 0, (const uint8_t *)frame + done - hdr, n);
		heads[used] = c->head;
		lens[used] = n;
		used++;
		done += n;
		if (!mergeable)
			break;
	}
	if (done < total) {
		if (!mergeable && used) {
			/* a buffer too small for the frame: the frame is
			 * lost, the buffer goes back empty */
			virtq_push(vq, heads[0], 0);
			net->rx_dropped++;
			return 1;
		}
		/* not enough buffers yet: give them back untouched */
		vq->last_avail -= used;
		return 0;
	}
	if (hdr == NET_HDR) {
		header[NET_HDR_NUM_BUFFERS] = used;
		header[NET_HDR_NUM_BUFFERS + 1] = used >> 8;
	}
	virtq_copy_to_in(net->rx_chain_first, 0, header, hdr);
	for (unsigned i = 0; i < used; i++)
		virtq_push(vq, heads[i], lens[i]);
	return 1;
}

static bool rx_ready(struct virtio_net *net)
{
	struct virtq *vq = virtio_pci_queue(net->vp, VIRTIO_NET_RX_QUEUE);

	return net->link_up && virtio_pci_running(net->vp) && vq->enabled;
}

/* Deliver held frames while there are buffers; lock held. */
static void rx_flush_pending(struct virtio_net *net)
{
	bool delivered = false;

	while (net->pending_count && rx_ready(net)) {
		struct pending_frame *f = net->pending[net->pending_head];
		int ret = rx_deliver(net, f->data, f->len);

		if (ret <= 0)
			break;
		free(f);
		net->pending_head = (net->pending_head + 1) % RX_PENDING_MAX;
		net->pending_count--;
		delivered = true;
	}
	if (delivered)
		virtio_pci_queue_interrupt(net->vp, VIRTIO_NET_RX_QUEUE);
}

static void rx_drop_pending(struct virtio_net *net)
{
	while (net->pending_count) {
		free(net->pending[net->pending_head]);
		net->pending_head = (net->pending_head + 1) % RX_PENDING_MAX;
		net->pending_count--;
	}
}

static void rx_hold(struct virtio_net *net, const void *frame, size_t len)
{
	struct pending_frame *f;

	if (net->pending_count == RX_PENDING_MAX) {
		net->rx_dropped++;
		return;
	}
	f = malloc(sizeof(*f) + len);
	if (!f) {
		net->rx_dropped++;
		return;
	}
	f->len = len;
	memcpy(f->data, frame, len);
	net->pending[(net->pending_head + net->pending_count) % RX_PENDING_MAX] =
		f;
	net->pending_count++;
}

/* The backend's receive callback. */
static void virtio_net_receive(void *opaque, const void *frame, size_t len)
{
	struct virtio_net *net = opaque;
	int ret = 0;

	if (len < ETH_MIN_FRAME || len > NET_MAX_FRAME)
		return;
	virtio_pci_lock(net->vp);
	if (!rx_ready(net)) {
		/* a guest without a driver does not receive */
		net->rx_dropped++;
		goto out;
	}
	rx_flush_pending(net);
	if (!net->pending_count)
		ret = rx_deliver(net, frame, len);
	if (ret > 0)
		virtio_pci_queue_interrupt(net->vp, VIRTIO_NET_RX_QUEUE);
	else if (ret == 0)
		rx_hold(net, frame, len);
out:
	virtio_pci_unlock(net->vp);
}

/* ---- transmit ------------------------------------------------------------*/

static void tx_process(struct virtio_net *net)
{
	struct virtio_pci *vp = net->vp;
	struct virtq *vq;
	char err[160];

	virtio_pci_lock(vp);
	vq = virtio_pci_queue(vp, VIRTIO_NET_TX_QUEUE);
	for (;;) {
		struct virtq_chain *c = net->tx_chain;
		size_t hdr, len = 0;
		int ret;

		if (!virtio_pci_running(vp))
			break;
		ret = virtq_pop(vq, c, err, sizeof(err));
		if (ret < 0) {
			broken(net, VIRTIO_NET_TX_QUEUE, err);
			break;
		}
		if (ret == 0) {
			/* look again after asking for the next kick, so a
			 * buffer added meanwhile is not missed */
			virtq_set_notify(vq, true);
			if (!virtq_has_work(vq))
				break;
			continue;
		}
		hdr = header_len(net);
		if (c->in_count) {
			broken(net, VIRTIO_NET_TX_QUEUE,
			       "transmit buffer with device-writable parts");
			break;
		}
		/* the header carries nothing we act on (no offloads) */
		if (c->out_len >= hdr + ETH_MIN_FRAME &&
		    c->out_len - hdr <= NET_MAX_FRAME)
			len = virtq_copy_from_out(c, hdr, net->tx_frame,
						  c->out_len - hdr);
		virtq_push(vq, c->head, 0);
		virtio_pci_queue_interrupt(vp, VIRTIO_NET_TX_QUEUE);
		if (len && net->link_up) {
			virtio_pci_unlock(vp);
			net_backend_send(net->backend, net->tx_frame, len);
			virtio_pci_lock(vp);
		}
	}
	virtio_pci_unlock(vp);
}

/* ---- transport callbacks ---------------------------------------------------*/

static void virtio_net_queue_notify(void *opaque, unsigned queue)
{
	struct virtio_net *net = opaque;

	if (queue == VIRTIO_NET_TX_QUEUE) {
		/* one vCPU at a time sends, in ring order */
		pthread_mutex_lock(&net->tx_lock);
		tx_process(net);
		pthread_mutex_unlock(&net->tx_lock);
	} else if (queue == VIRTIO_NET_RX_QUEUE) {
		virtio_pci_lock(net->vp);
		rx_flush_pending(net);
		virtio_pci_unlock(net->vp);
	}
}

static void config_bytes(struct virtio_net *net, uint8_t out[8])
{
	memcpy(out, net->mac, 6);
	out[6] = net->link_up ? VIRTIO_NET_S_LINK_UP : 0;
	out[7] = 0;
}

static void virtio_net_read_config(void *opaque, unsigned off, void *data,
				   unsigned size)
{
	uint8_t config[VIRTIO_NET_CONFIG_SIZE];

	config_bytes(opaque, config);
	memcpy(data, config + off, size);
}

static void virtio_net_write_config(void *opaque, unsigned off,
				    const void *data, unsigned size)
{
	struct virtio_net *net = opaque;

	/* legacy drivers may set the MAC here; modern ones cannot */
	if (off < 6 && !virtio_pci_has_feature(net->vp, VIRTIO_F_VERSION_1))
		memcpy(net->mac + off, data, off + size <= 6 ? size : 6 - off);
}

static void virtio_net_reset(void *opaque)
{
	rx_drop_pending(opaque);
}

static const struct virtio_device_ops virtio_net_ops = {
	.queue_notify = virtio_net_queue_notify,
	.read_config = virtio_net_read_config,
	.write_config = virtio_net_write_config,
	.reset = virtio_net_reset,
};

struct virtio_net *virtio_net_create(struct vmm *vm, unsigned slot,
				     const uint8_t mac[6], bool modern_only,
				     struct net_backend *backend, char *err,
				     size_t errlen)
{
	struct virtio_pci_config cfg = {
		.device_type = VIRTIO_ID_NET,
		.legacy_pci_id = VIRTIO_NET_PCI_ID_TRANSITIONAL,
		.transitional = !modern_only,
		.class_code = 0x020000, /* Ethernet controller */
		.features = 1ull << VIRTIO_NET_F_MAC |
			    1ull << VIRTIO_NET_F_STATUS |
			    1ull << VIRTIO_NET_F_MRG_RXBUF |
			    1ull << VIRTIO_F_ANY_LAYOUT |
			    1ull << VIRTIO_F_RING_INDIRECT_DESC |
			    1ull << VIRTIO_F_RING_EVENT_IDX,
		.num_queues = 2,
		.queue_max_size = VIRTIO_NET_QUEUE_SIZE,
		.config_size = VIRTIO_NET_CONFIG_SIZE,
	};
	struct virtio_net *net = calloc(1, sizeof(*net));

	if (!net) {
		snprintf(err, errlen, "virtio-net: out of memory");
		return NULL;
	}
	memcpy(net->mac, mac, 6);
	net->link_up = true;
	net->backend = backend;
	pthread_mutex_init(&net->tx_lock, NULL);
	net->rx_chain_first = malloc(sizeof(struct virtq_chain));
	net->rx_chain_rest = malloc(sizeof(struct virtq_chain));
	net->tx_chain = malloc(sizeof(struct virtq_chain));
	net->tx_frame = malloc(NET_MAX_FRAME);
	if (!net->rx_chain_first || !net->rx_chain_rest || !net->tx_chain ||
	    !net->tx_frame) {
		snprintf(err, errlen, "virtio-net: out of memory");
		goto fail;
	}
	net->vp = virtio_pci_create(vm, slot, &cfg, &virtio_net_ops, net, err,
				    errlen);
	if (!net->vp)
		goto fail;
	if (backend &&
	    net_backend_start(backend, virtio_net_receive, net, err, errlen))
		goto fail;
	return net;
fail:
	virtio_net_destroy(net);
	return NULL;
}

void virtio_net_set_link(struct virtio_net *net, bool up)
{
	virtio_pci_lock(net->vp);
	if (net->link_up != up) {
		net->link_up = up;
		virtio_pci_config_changed(net->vp);
	}
	virtio_pci_unlock(net->vp);
}

void virtio_net_destroy(struct virtio_net *net)
{
	if (!net)
		return;
	rx_drop_pending(net);
	/* the PCI function stays registered with the machine, which is
	 * going away too; only what the device allocated is freed */
	virtio_pci_destroy(net->vp);
	pthread_mutex_destroy(&net->tx_lock);
	free(net->rx_chain_first);
	free(net->rx_chain_rest);
	free(net->tx_chain);
	free(net->tx_frame);
	free(net);
}

struct virtio_pci *virtio_net_transport(struct virtio_net *net)
{
	return net->vp;
}

uint64_t virtio_net_rx_dropped(struct virtio_net *net)
{
	uint64_t n;

	virtio_pci_lock(net->vp);
	n = net->rx_dropped;
	virtio_pci_unlock(net->vp);
	return n;
}
