/* SPDX-License-Identifier: MIT */
/*
 * imgvm: virtio split virtqueues (virtio 1.0 section 2.4): descriptor
 * table, available and used rings in guest memory, indirect descriptors
 * and event-index notification suppression.  Shared by every virtio
 * device; the transport (virtio_pci.c) owns the queue registers.
 *
 * Every chain the guest offers is validated before the device sees it:
 * a descriptor outside guest RAM, a zero length, a next index past the
 * table, a loop (more descriptors than the table holds), a nested or
 * malformed indirect table, or a readable descriptor after a writable one
 * makes virtq_pop return -EIO; the device then marks itself broken
 * (DEVICE_NEEDS_RESET) and stops touching the queue.
 */
#ifndef IMGVM_VIRTQUEUE_H
#define IMGVM_VIRTQUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "vmm/vmm.h"

#define VIRTQ_MAX_SIZE 1024
/* Buffers one chain may hold (direct plus indirect descriptors). */
#define VIRTQ_MAX_CHAIN 1024

#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2
#define VIRTQ_DESC_F_INDIRECT 4
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1
#define VIRTQ_USED_F_NO_NOTIFY 1

struct virtq {
	struct vmm *vm;
	/* set by the transport */
	uint16_t size;
	bool enabled;
	uint64_t desc_addr;
	uint64_t avail_addr;
	uint64_t used_addr;
	uint16_t msix_vector;
	/* negotiated features */
	bool event_idx;
	bool indirect;
	/* device side */
	uint16_t last_avail;
	uint16_t used_idx;
	uint16_t signalled_used;
	bool signalled_used_valid;
};

/* One chain taken from the available ring: the device-readable buffers
 * (out) first, then the device-writable ones (in). */
struct virtq_chain {
	uint16_t head;
	unsigned out_count;
	unsigned in_count;
	size_t out_len;
	size_t in_len;
	struct iovec iov[VIRTQ_MAX_CHAIN];
};

/* Back to the reset state (size and addresses kept as the transport set
 * them: it clears them itself). */
void virtq_reset(struct virtq *vq);
/* True when the queue is enabled and its rings lie in guest RAM. */
bool virtq_ready(const struct virtq *vq);
/* 1: a chain is in *chain; 0: the ring is empty; -EIO: the guest broke
 * the ring (message in err). */
int virtq_pop(struct virtq *vq, struct virtq_chain *chain, char *err,
	      size_t errlen);
/* Return a chain: written = bytes the device wrote into its in buffers. */
void virtq_push(struct virtq *vq, uint16_t head, uint32_t written);
/* After pushes: true when the driver wants an interrupt now. */
bool virtq_should_interrupt(struct virtq *vq);
/* Ask the driver for (or spare it) notifications of new buffers. */
void virtq_set_notify(struct virtq *vq, bool enable);
/* True when the available ring holds chains not yet popped. */
bool virtq_has_work(struct virtq *vq);

/* Copy between a chain's buffers and flat memory, skipping `skip` bytes
 * of the chain's out (or in) part; return the bytes copied. */
size_t virtq_copy_from_out(const struct virtq_chain *chain, size_t skip,
			   void *buf, size_t len);
size_t virtq_copy_to_in(const struct virtq_chain *chain, size_t skip,
			const void *buf, size_t len);

/* Ring sizes in bytes for a queue of n entries (section 2.4). */
static inline uint64_t virtq_desc_bytes(unsigned n)
{
	return 16ull * n;
}
static inline uint64_t virtq_avail_bytes(unsigned n)
{
	return 6ull + 2ull * n;
}
static inline uint64_t virtq_used_bytes(unsigned n)
{
	return 6ull + 8ull * n;
}

#endif
