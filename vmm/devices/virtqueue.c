// SPDX-License-Identifier: MIT
/*
 * Split virtqueues (virtio 1.0 section 2.4).  The rings live in guest
 * memory the guest may rewrite at any time: every index read from them is
 * checked before use, each descriptor is read once into a local copy, and
 * chains are bounded so a hostile ring costs at most VIRTQ_MAX_CHAIN steps.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "vmm/devices/virtqueue.h"

struct virtq_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};
_Static_assert(sizeof(struct virtq_desc) == 16, "virtq_desc is 16 bytes");

/* The guest is x86: the rings are little-endian like the host, and
 * naturally aligned fields are read and written whole. */
static uint16_t load16(const void *p)
{
	return __atomic_load_n((const uint16_t *)p, __ATOMIC_RELAXED);
}

static void store16(void *p, uint16_t v)
{
	__atomic_store_n((uint16_t *)p, v, __ATOMIC_RELAXED);
}

static void *ring_hva(const struct virtq *vq, uint64_t gpa, uint64_t len)
{
	return vmm_gpa_to_hva(vq->vm, gpa, len);
}

void virtq_reset(struct virtq *vq)
{
	vq->last_avail = 0;
	vq->used_idx = 0;
	vq->signalled_used = 0;
	vq->signalled_used_valid = false;
}

bool virtq_ready(const struct virtq *vq)
{
	return vq->enabled && vq->size &&
	       ring_hva(vq, vq->desc_addr, virtq_desc_bytes(vq->size)) &&
	       ring_hva(vq, vq->avail_addr, virtq_avail_bytes(vq->size)) &&
	       ring_hva(vq, vq->used_addr, virtq_used_bytes(vq->size));
}

static int chain_add(struct virtq *vq, struct virtq_chain *chain,
		     const struct virtq_desc *d, char *err, size_t errlen)
{
	bool writable = d->flags & VIRTQ_DESC_F_WRITE;
	unsigned n = chain->out_count + chain->in_count;
	void *hva;

	if (!d->len) {
		snprintf(err, errlen, "descriptor of zero length");
		return -EIO;
	}
	hva = ring_hva(vq, d->addr, d->len);
	if (!hva) {
		snprintf(err, errlen,
			 "descriptor 0x%llx+%u is outside guest memory",
			 (unsigned long long)d->addr, d->len);
		return -EIO;
	}
	if (n >= VIRTQ_MAX_CHAIN) {
		snprintf(err, errlen, "chain longer than %d descriptors",
			 VIRTQ_MAX_CHAIN);
		return -EIO;
	}
	if (!writable && chain->in_count) {
		snprintf(err, errlen,
			 "device-readable descriptor after a writable one");
		return -EIO;
	}
	chain->iov[n].iov_base = hva;
	chain->iov[n].iov_len = d->len;
	if (writable) {
		chain->in_count++;
		chain->in_len += d->len;
	} else {
		chain->out_count++;
		chain->out_len += d->len;
	}
	return 0;
}

static void read_desc(const void *table, unsigned i, struct virtq_desc *d)
{
	memcpy(d, (const uint8_t *)table + 16 * i, 16);
}

/* An indirect table (section 2.4.5.3): its own descriptors, chained by
 * next within the table, none of them indirect again. */
static int walk_indirect(struct virtq *vq, struct virtq_chain *chain,
			 const struct virtq_desc *outer, char *err,
			 size_t errlen)
{
	unsigned count = outer->len / 16, i = 0, steps = 0;
	const void *table;
	struct virtq_desc d;

	if (!vq->indirect) {
		snprintf(err, errlen,
			 "indirect descriptor without the negotiated feature");
		return -EIO;
	}
	if (outer->flags & VIRTQ_DESC_F_NEXT) {
		snprintf(err, errlen, "indirect descriptor with NEXT set");
		return -EIO;
	}
	if (!outer->len || outer->len % 16 || count > VIRTQ_MAX_CHAIN) {
		snprintf(err, errlen, "indirect table of %u bytes", outer->len);
		return -EIO;
	}
	table = ring_hva(vq, outer->addr, outer->len);
	if (!table) {
		snprintf(err, errlen,
			 "indirect table 0x%llx+%u is outside guest memory",
			 (unsigned long long)outer->addr, outer->len);
		return -EIO;
	}
	for (;;) {
		int ret;

		if (++steps > count) {
			snprintf(err, errlen, "loop in an indirect table");
			return -EIO;
		}
		read_desc(table, i, &d);
		if (d.flags & VIRTQ_DESC_F_INDIRECT) {
			snprintf(err, errlen, "nested indirect descriptor");
			return -EIO;
		}
		ret = chain_add(vq, chain, &d, err, errlen);
		if (ret)
			return ret;
		if (!(d.flags & VIRTQ_DESC_F_NEXT))
			return 0;
		if (d.next >= count) {
			snprintf(err, errlen,
				 "indirect next %u past a table of %u", d.next,
				 count);
			return -EIO;
		}
		i = d.next;
	}
}

bool virtq_has_work(struct virtq *vq)
{
	const uint8_t *avail =
		ring_hva(vq, vq->avail_addr, virtq_avail_bytes(vq->size));

	if (!vq->enabled || !vq->size || !avail)
		return false;
	return load16(avail + 2) != vq->last_avail;
}

int virtq_pop(struct virtq *vq, struct virtq_chain *chain, char *err,
	      size_t errlen)
{
	const uint8_t *avail;
	const void *table;
	uint16_t avail_idx, head;
	unsigned i, steps = 0;

	chain->out_count = chain->in_count = 0;
	chain->out_len = chain->in_len = 0;
	if (!vq->enabled || !vq->size)
		return 0;
	avail = ring_hva(vq, vq->avail_addr, virtq_avail_bytes(vq->size));
	table = ring_hva(vq, vq->desc_addr, virtq_desc_bytes(vq->size));
	if (!avail || !table ||
	    !ring_hva(vq, vq->used_addr, virtq_used_bytes(vq->size))) {
		snprintf(err, errlen, "queue rings are outside guest memory");
		return -EIO;
	}
	avail_idx = load16(avail + 2);
	if (avail_idx == vq->last_avail)
		return 0;
	if ((uint16_t)(avail_idx - vq->last_avail) > vq->size) {
		snprintf(err, errlen,
			 "available index moved by %u on a queue of %u",
			 (uint16_t)(avail_idx - vq->last_avail), vq->size);
		return -EIO;
	}
	/* the ring entry and the descriptors are read after the index */
	__atomic_thread_fence(__ATOMIC_ACQUIRE);
	head = load16(avail + 4 + 2 * (vq->last_avail % vq->size));
	if (head >= vq->size) {
		snprintf(err, errlen, "head %u past a queue of %u", head,
			 vq->size);
		return -EIO;
	}
	chain->head = head;
	i = head;
	for (;;) {
		struct virtq_desc d;
		int ret;

		if (++steps > vq->size) {
			snprintf(err, errlen, "loop in a descriptor chain");
			return -EIO;
		}
		read_desc(table, i, &d);
		if (d.flags & VIRTQ_DESC_F_INDIRECT)
			ret = walk_indirect(vq, chain, &d, err, errlen);
		else
			ret = chain_add(vq, chain, &d, err, errlen);
		if (ret)
			return ret;
		if (!(d.flags & VIRTQ_DESC_F_NEXT))
			break;
		if (d.next >= vq->size) {
			snprintf(err, errlen, "next %u past a queue of %u",
				 d.next, vq->size);
			return -EIO;
		}
		i = d.next;
	}
	vq->last_avail++;
	if (vq->event_idx) {
		/* avail_event: the driver need not notify before this */
		uint8_t *used =
			ring_hva(vq, vq->used_addr, virtq_used_bytes(vq->size));

		store16(used + 4 + 8 * vq->size, vq->last_avail);
	}
	return 1;
}

void virtq_push(struct virtq *vq, uint16_t head, uint32_t written)
{
	uint8_t *used = ring_hva(vq, vq->used_addr, virtq_used_bytes(vq->size));
	uint8_t *elem;

	if (!used)
		return;
	elem = used + 4 + 8 * (vq->used_idx % vq->size);
	memcpy(elem, &(uint32_t){ head }, 4);
	memcpy(elem + 4, &written, 4);
	/* the element is visible before the index that publishes it */
	__atomic_thread_fence(__ATOMIC_RELEASE);
	vq->used_idx++;
	store16(used + 2, vq->used_idx);
}

bool virtq_should_interrupt(struct virtq *vq)
{
	const uint8_t *avail =
		ring_hva(vq, vq->avail_addr, virtq_avail_bytes(vq->size));
	uint16_t old, event;
	bool valid;

	if (!avail)
		return false;
	/* the used index is published before the driver's wishes are read */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (!vq->event_idx)
		return !(load16(avail) & VIRTQ_AVAIL_F_NO_INTERRUPT);
	old = vq->signalled_used;
	valid = vq->signalled_used_valid;
	vq->signalled_used = vq->used_idx;
	vq->signalled_used_valid = true;
	if (!valid)
		return true;
	event = load16(avail + 4 + 2 * vq->size); /* used_event */
	/* section 2.4.7.2: interrupt when used_event lies in (old, new] */
	return (uint16_t)(vq->used_idx - event - 1) <
	       (uint16_t)(vq->used_idx - old);
}

void virtq_set_notify(struct virtq *vq, bool enable)
{
	uint8_t *used = ring_hva(vq, vq->used_addr, virtq_used_bytes(vq->size));

	if (!used)
		return;
	if (vq->event_idx) {
		if (enable)
			store16(used + 4 + 8 * vq->size, vq->last_avail);
	} else {
		store16(used, enable ? 0 : VIRTQ_USED_F_NO_NOTIFY);
	}
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
}

static size_t iov_copy(const struct iovec *iov, unsigned count, size_t skip,
		       void *buf, size_t len, bool to_iov)
{
	size_t done = 0;

	for (unsigned i = 0; i < count && done < len; i++) {
		size_t n;

		if (skip >= iov[i].iov_len) {
			skip -= iov[i].iov_len;
			continue;
		}
		n = iov[i].iov_len - skip;
		if (n > len - done)
			n = len - done;
		if (to_iov)
			memcpy((uint8_t *)iov[i].iov_base + skip,
			       (const uint8_t *)buf + done, n);
		else
			memcpy((uint8_t *)buf + done,
			       (const uint8_t *)iov[i].iov_base + skip, n);
		done += n;
		skip = 0;
	}
	return done;
}

size_t virtq_copy_from_out(const struct virtq_chain *chain, size_t skip,
			   void *buf, size_t len)
{
	return iov_copy(chain->iov, chain->out_count, skip, buf, len, false);
}

size_t virtq_copy_to_in(const struct virtq_chain *chain, size_t skip,
			const void *buf, size_t len)
{
	return iov_copy(chain->iov + chain->out_count, chain->in_count, skip,
			(void *)buf, len, true);
}
