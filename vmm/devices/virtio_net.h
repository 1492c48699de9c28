/* SPDX-License-Identifier: MIT */
/*
 * imgvm: virtio-net (virtio 1.0 section 5.1), transitional 1af4:1000 or
 * modern 1af4:1041, on the virtio PCI transport, with a network backend
 * behind it (vmm/net/net.h).
 */
#ifndef IMGVM_VIRTIO_NET_H
#define IMGVM_VIRTIO_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmm/vmm.h"

struct net_backend;
struct virtio_net;
struct virtio_pci;

#define VIRTIO_NET_PCI_ID_TRANSITIONAL 0x1000
#define VIRTIO_NET_RX_QUEUE 0
#define VIRTIO_NET_TX_QUEUE 1

/* Registers the card at PCI slot and starts the backend. */
struct virtio_net *virtio_net_create(struct vmm *vm, unsigned slot,
				     const uint8_t mac[6], bool modern_only,
				     struct net_backend *backend, char *err,
				     size_t errlen);
/* Link status as the guest sees it (config change interrupt). */
void virtio_net_set_link(struct virtio_net *net, bool up);
/* The backend is the caller's to close, after this. */
void virtio_net_destroy(struct virtio_net *net);

/* For tests: the transport, and frames dropped for want of buffers. */
struct virtio_pci *virtio_net_transport(struct virtio_net *net);
uint64_t virtio_net_rx_dropped(struct virtio_net *net);

#endif
