// SPDX-License-Identifier: MIT
/*
 * virtio over PCI (virtio 1.0 section 4.1).
 *
 * BAR0 (I/O, transitional devices only): the legacy interface (section
 * 4.1.4.8), for drivers older than virtio 1.0 and for iPXE.
 * BAR1 (memory): the MSI-X table and pending bit array.
 * BAR4 (memory, 64-bit): the modern structures the vendor capabilities
 * point at: common config, ISR, device config, notifications.
 *
 * A driver uses one interface; the device follows whichever set the
 * features last.  The rings are the same either way; only their placement
 * (the legacy queue PFN puts them in one 4 KiB-aligned block) differs.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/devices/virtio_pci.h"

#define PCI_VENDOR_REDHAT_QUMRANET 0x1af4
#define PCI_STATUS_CAP_LIST 0x10
#define PCI_CAP_ID_VENDOR 0x09
#define PCI_CAP_ID_MSIX 0x11

/* capability placement in config space */
#define CAP_MSIX 0x40
#define CAP_COMMON 0x50
#define CAP_NOTIFY 0x60
#define CAP_ISR 0x78
#define CAP_DEVICE 0x88
#define CAP_PCI_CFG 0x98
#define CAP_END 0xac

#define VIRTIO_PCI_CAP_COMMON_CFG 1
#define VIRTIO_PCI_CAP_NOTIFY_CFG 2
#define VIRTIO_PCI_CAP_ISR_CFG 3
#define VIRTIO_PCI_CAP_DEVICE_CFG 4
#define VIRTIO_PCI_CAP_PCI_CFG 5

#define MODERN_BAR_SIZE 0x4000
#define MSIX_BAR_SIZE 0x1000
#define MSIX_CONTROL_ENABLE 0x8000
#define MSIX_CONTROL_MASK 0x4000
#define MSIX_ENTRY_MASKED 1

#define ISR_QUEUE 0x1
#define ISR_CONFIG 0x2

/* struct virtio_pci_common_cfg (section 4.1.4.3) */
#define COMMON_DFSELECT 0x00
#define COMMON_DF 0x04
#define COMMON_GFSELECT 0x08
#define COMMON_GF 0x0c
#define COMMON_MSIX 0x10
#define COMMON_NUMQ 0x12
#define COMMON_STATUS 0x14
#define COMMON_CFGGENERATION 0x15
#define COMMON_Q_SELECT 0x16
#define COMMON_Q_SIZE 0x18
#define COMMON_Q_MSIX 0x1a
#define COMMON_Q_ENABLE 0x1c
#define COMMON_Q_NOFF 0x1e
#define COMMON_Q_DESCLO 0x20
#define COMMON_Q_DESCHI 0x24
#define COMMON_Q_AVAILLO 0x28
#define COMMON_Q_AVAILHI 0x2c
#define COMMON_Q_USEDLO 0x30
#define COMMON_Q_USEDHI 0x34
#define COMMON_SIZE 0x38

/* legacy header (section 4.1.4.8) */
#define LEGACY_HOST_FEATURES 0x00
#define LEGACY_GUEST_FEATURES 0x04
#define LEGACY_QUEUE_PFN 0x08
#define LEGACY_QUEUE_NUM 0x0c
#define LEGACY_QUEUE_SEL 0x0e
#define LEGACY_QUEUE_NOTIFY 0x10
#define LEGACY_STATUS 0x12
#define LEGACY_ISR 0x13
#define LEGACY_MSIX_CONFIG 0x14
#define LEGACY_MSIX_QUEUE 0x16
#define LEGACY_HEADER 0x14
#define LEGACY_HEADER_MSIX 0x18
#define LEGACY_ALIGN 4096

struct msix_entry {
	uint32_t address_lo;
	uint32_t address_hi;
	uint32_t data;
	uint32_t control;
};

struct virtio_pci {
	struct pci_device pci;
	struct vmm *vm;
	pthread_mutex_t lock;
	struct virtio_pci_config cfg;
	const struct virtio_device_ops *ops;
	void *opaque;
	uint8_t config_template[256];

	uint64_t device_features;
	uint64_t driver_features;
	uint32_t device_feature_select;
	uint32_t driver_feature_select;
	uint8_t status;
	uint8_t isr;
	uint8_t config_generation;
	uint16_t queue_select;
	uint16_t config_vector;
	bool legacy_mode;
	char broken[160];

	struct virtq queue[VIRTIO_PCI_MAX_QUEUES];
	unsigned msix_vectors;
	struct msix_entry msix[VIRTIO_PCI_MAX_QUEUES + 1];
	uint64_t msix_pending;
};

static uint32_t load_le(const void *data, unsigned size)
{
	const uint8_t *p = data;
	uint32_t v = 0;

	for (unsigned i = 0; i < size && i < 4; i++)
		v |= (uint32_t)p[i] << (8 * i);
	return v;
}

static void store_le(void *data, unsigned size, uint64_t v)
{
	uint8_t *p = data;

	for (unsigned i = 0; i < size; i++)
		p[i] = v >> (8 * i);
}

void virtio_pci_lock(struct virtio_pci *vp)
{
	pthread_mutex_lock(&vp->lock);
}

void virtio_pci_unlock(struct virtio_pci *vp)
{
	pthread_mutex_unlock(&vp->lock);
}

struct virtq *virtio_pci_queue(struct virtio_pci *vp, unsigned queue)
{
	return queue < vp->cfg.num_queues ? &vp->queue[queue] : NULL;
}

struct pci_device *virtio_pci_device(struct virtio_pci *vp)
{
	return &vp->pci;
}

uint64_t virtio_pci_features(const struct virtio_pci *vp)
{
	return vp->driver_features;
}

bool virtio_pci_has_feature(const struct virtio_pci *vp, unsigned bit)
{
	return vp->driver_features >> bit & 1;
}

bool virtio_pci_running(const struct virtio_pci *vp)
{
	return (vp->status & VIRTIO_STATUS_DRIVER_OK) &&
	       !(vp->status &
		 (VIRTIO_STATUS_NEEDS_RESET | VIRTIO_STATUS_FAILED));
}

const char *virtio_pci_broken_reason(const struct virtio_pci *vp)
{
	return vp->broken;
}

/* ---- interrupts --------------------------------------------------------*/

static uint16_t msix_control(const struct virtio_pci *vp)
{
	return vp->pci.config[CAP_MSIX + 2] | vp->pci.config[CAP_MSIX + 3] << 8;
}

static bool msix_enabled(const struct virtio_pci *vp)
{
	return msix_control(vp) & MSIX_CONTROL_ENABLE;
}

static bool msix_masked(const struct virtio_pci *vp, unsigned vector)
{
	return (msix_control(vp) & MSIX_CONTROL_MASK) ||
	       (vp->msix[vector].control & MSIX_ENTRY_MASKED);
}

static void msix_send(struct virtio_pci *vp, unsigned vector)
{
	const struct msix_entry *e = &vp->msix[vector];

	vmm_send_msi(vp->vm, (uint64_t)e->address_hi << 32 | e->address_lo,
		     e->data);
}

static void virtio_pci_interrupt(struct virtio_pci *vp, uint16_t vector,
				 uint8_t isr_bit)
{
	if (msix_enabled(vp)) {
		/* the ISR still tells a polling driver why */
		vp->isr |= isr_bit;
		if (vector >= vp->msix_vectors)
			return; /* VIRTIO_MSI_NO_VECTOR or out of range */
		if (msix_masked(vp, vector))
			vp->msix_pending |= 1ull << vector;
		else
			msix_send(vp, vector);
		return;
	}
	vp->isr |= isr_bit;
	pci_set_intx(&vp->pci, true);
}

/* Pending vectors whose mask was lifted are delivered now. */
static void msix_deliver_pending(struct virtio_pci *vp)
{
	if (!msix_enabled(vp))
		return;
	for (unsigned v = 0; v < vp->msix_vectors; v++) {
		if ((vp->msix_pending >> v & 1) && !msix_masked(vp, v)) {
			vp->msix_pending &= ~(1ull << v);
			msix_send(vp, v);
		}
	}
}

void virtio_pci_queue_interrupt(struct virtio_pci *vp, unsigned queue)
{
	struct virtq *vq = virtio_pci_queue(vp, queue);

	if (!vq || !virtq_should_interrupt(vq))
		return;
	virtio_pci_interrupt(vp, vq->msix_vector, ISR_QUEUE);
}

void virtio_pci_config_changed(struct virtio_pci *vp)
{
	vp->config_generation++;
	if (vp->status & VIRTIO_STATUS_DRIVER_OK)
		virtio_pci_interrupt(vp, vp->config_vector, ISR_CONFIG);
}

void virtio_pci_set_broken(struct virtio_pci *vp, const char *reason)
{
	if (vp->status & VIRTIO_STATUS_NEEDS_RESET)
		return;
	snprintf(vp->broken, sizeof(vp->broken), "%s", reason);
	vp->status |= VIRTIO_STATUS_NEEDS_RESET;
	/* a legacy driver knows no NEEDS_RESET: it just sees a dead queue */
	virtio_pci_config_changed(vp);
}

/* ---- status and features -------------------------------------------------*/

static void apply_ring_features(struct virtio_pci *vp)
{
	for (unsigned q = 0; q < vp->cfg.num_queues; q++) {
		vp->queue[q].event_idx =
			virtio_pci_has_feature(vp, VIRTIO_F_RING_EVENT_IDX);
		vp->queue[q].indirect =
			virtio_pci_has_feature(vp, VIRTIO_F_RING_INDIRECT_DESC);
	}
}

static void reset_registers(struct virtio_pci *vp)
{
	vp->status = 0;
	vp->driver_features = 0;
	vp->device_feature_select = 0;
	vp->driver_feature_select = 0;
	vp->queue_select = 0;
	vp->config_vector = VIRTIO_MSI_NO_VECTOR;
	vp->isr = 0;
	vp->broken[0] = 0;
	vp->msix_pending = 0;
	vp->legacy_mode = false;
	for (unsigned q = 0; q < vp->cfg.num_queues; q++) {
		struct virtq *vq = &vp->queue[q];

		virtq_reset(vq);
		vq->size = vp->cfg.queue_max_size;
		vq->enabled = false;
		vq->desc_addr = vq->avail_addr = vq->used_addr = 0;
		vq->msix_vector = VIRTIO_MSI_NO_VECTOR;
		vq->event_idx = vq->indirect = false;
	}
}

static void device_reset(struct virtio_pci *vp)
{
	reset_registers(vp);
	pci_set_intx(&vp->pci, false);
	if (vp->ops->reset)
		vp->ops->reset(vp->opaque);
}

static void write_status(struct virtio_pci *vp, uint8_t status)
{
	if (!status) {
		device_reset(vp);
		return;
	}
	if ((status & VIRTIO_STATUS_FEATURES_OK) &&
	    !(vp->status & VIRTIO_STATUS_FEATURES_OK)) {
		/* section 2.2.2: features the device did not offer, or a
		 * modern driver without VERSION_1, are refused by leaving
		 * FEATURES_OK clear */
		if ((vp->driver_features & ~vp->device_features) ||
		    (!vp->legacy_mode &&
		     !virtio_pci_has_feature(vp, VIRTIO_F_VERSION_1)))
			status &= ~VIRTIO_STATUS_FEATURES_OK;
	}
	/* NEEDS_RESET is the device's to set */
	vp->status = (status & ~VIRTIO_STATUS_NEEDS_RESET) |
		     (vp->status & VIRTIO_STATUS_NEEDS_RESET);
	apply_ring_features(vp);
}

/* ---- modern interface (BAR4) ---------------------------------------------*/

static void common_read(struct virtio_pci *vp, unsigned off, void *data,
			unsigned size)
{
	struct virtq *vq = virtio_pci_queue(vp, vp->queue_select);
	uint64_t v = 0;

	switch (off) {
	case COMMON_DFSELECT:
		v = vp->device_feature_select;
		break;
	case COMMON_DF:
		v = vp->device_feature_select < 2
			    ? (uint32_t)(vp->device_features >>
					 (32 * vp->device_feature_select))
			    : 0;
		break;
	case COMMON_GFSELECT:
		v = vp->driver_feature_select;
		break;
	case COMMON_GF:
		v = vp->driver_feature_select < 2
			    ? (uint32_t)(vp->driver_features >>
					 (32 * vp->driver_feature_select))
			    : 0;
		break;
	case COMMON_MSIX:
		v = vp->config_vector;
		break;
	case COMMON_NUMQ:
		v = vp->cfg.num_queues;
		break;
	case COMMON_STATUS:
		v = vp->status;
		break;
	case COMMON_CFGGENERATION:
		v = vp->config_generation;
		break;
	case COMMON_Q_SELECT:
		v = vp->queue_select;
		break;
	case COMMON_Q_SIZE:
		v = vq ? vq->size : 0;
		break;
	case COMMON_Q_MSIX:
		v = vq ? vq->msix_vector : VIRTIO_MSI_NO_VECTOR;
		break;
	case COMMON_Q_ENABLE:
		v = vq ? vq->enabled : 0;
		break;
	case COMMON_Q_NOFF:
		v = vp->queue_select;
		break;
	case COMMON_Q_DESCLO:
	case COMMON_Q_DESCHI:
		v = vq ? vq->desc_addr >> (off == COMMON_Q_DESCHI ? 32 : 0) : 0;
		break;
	case COMMON_Q_AVAILLO:
	case COMMON_Q_AVAILHI:
		v = vq ? vq->avail_addr >> (off == COMMON_Q_AVAILHI ? 32 : 0)
		       : 0;
		break;
	case COMMON_Q_USEDLO:
	case COMMON_Q_USEDHI:
		v = vq ? vq->used_addr >> (off == COMMON_Q_USEDHI ? 32 : 0) : 0;
		break;
	}
	store_le(data, size, v);
}

static void set_addr_half(uint64_t *addr, bool high, uint32_t v)
{
	if (high)
		*addr = (*addr & 0xffffffffull) | (uint64_t)v << 32;
	else
		*addr = (*addr & ~0xffffffffull) | v;
}

static void common_write(struct virtio_pci *vp, unsigned off, uint32_t v)
{
	struct virtq *vq = virtio_pci_queue(vp, vp->queue_select);
	/* queue registers only change while the queue is disabled
	 * (section 4.1.4.3.2) */
	bool queue_writable = vq && !vq->enabled;

	vp->legacy_mode = false;
	switch (off) {
	case COMMON_DFSELECT:
		vp->device_feature_select = v;
		break;
	case COMMON_GFSELECT:
		vp->driver_feature_select = v;
		break;
	case COMMON_GF:
		if (vp->driver_feature_select < 2 &&
		    !(vp->status & VIRTIO_STATUS_FEATURES_OK)) {
			unsigned shift = 32 * vp->driver_feature_select;

			vp->driver_features = (vp->driver_features &
					       ~(0xffffffffull << shift)) |
					      (uint64_t)v << shift;
		}
		break;
	case COMMON_MSIX:
		vp->config_vector = v < vp->msix_vectors ? v
							 : VIRTIO_MSI_NO_VECTOR;
		break;
	case COMMON_STATUS:
		write_status(vp, v);
		break;
	case COMMON_Q_SELECT:
		vp->queue_select = v;
		break;
	case COMMON_Q_SIZE:
		/* a power of two no larger than the maximum */
		if (queue_writable && v && v <= vp->cfg.queue_max_size &&
		    !(v & (v - 1)))
			vq->size = v;
		break;
	case COMMON_Q_MSIX:
		if (vq)
			vq->msix_vector =
				v < vp->msix_vectors ? v : VIRTIO_MSI_NO_VECTOR;
		break;
	case COMMON_Q_ENABLE:
		if (queue_writable && v == 1) {
			virtq_reset(vq);
			vq->enabled = true;
		}
		break;
	case COMMON_Q_DESCLO:
	case COMMON_Q_DESCHI:
		if (queue_writable)
			set_addr_half(&vq->desc_addr, off == COMMON_Q_DESCHI,
				      v);
		break;
	case COMMON_Q_AVAILLO:
	case COMMON_Q_AVAILHI:
		if (queue_writable)
			set_addr_half(&vq->avail_addr, off == COMMON_Q_AVAILHI,
				      v);
		break;
	case COMMON_Q_USEDLO:
	case COMMON_Q_USEDHI:
		if (queue_writable)
			set_addr_half(&vq->used_addr, off == COMMON_Q_USEDHI,
				      v);
		break;
	}
}

static void modern_io(void *opaque, uint64_t addr, void *data, unsigned size,
		      bool is_write)
{
	struct virtio_pci *vp = opaque;
	int notify = -1;

	if (!is_write)
		memset(data, 0, size);
	pthread_mutex_lock(&vp->lock);
	if (addr < VIRTIO_PCI_ISR_OFFSET) {
		/* fields are accessed with their own width (4.1.3.1) */
		if (addr + size <= COMMON_SIZE && size <= 4 &&
		    !(addr & (size - 1))) {
			if (is_write)
				common_write(vp, addr, load_le(data, size));
			else
				common_read(vp, addr, data, size);
		}
	} else if (addr < VIRTIO_PCI_DEVICE_OFFSET) {
		if (!is_write && addr == VIRTIO_PCI_ISR_OFFSET) {
			store_le(data, 1, vp->isr);
			vp->isr = 0;
			pci_set_intx(&vp->pci, false);
		}
	} else if (addr < VIRTIO_PCI_NOTIFY_OFFSET) {
		unsigned off = addr - VIRTIO_PCI_DEVICE_OFFSET;

		if (off + size <= vp->cfg.config_size) {
			if (is_write && vp->ops->write_config)
				vp->ops->write_config(vp->opaque, off, data,
						      size);
			else if (!is_write && vp->ops->read_config)
				vp->ops->read_config(vp->opaque, off, data,
						     size);
		}
	} else if (is_write) {
		unsigned off = addr - VIRTIO_PCI_NOTIFY_OFFSET;
		unsigned queue = off / VIRTIO_PCI_NOTIFY_MULTIPLIER;

		if (queue < vp->cfg.num_queues)
			notify = queue;
	}
	pthread_mutex_unlock(&vp->lock);
	if (notify >= 0 && vp->ops->queue_notify)
		vp->ops->queue_notify(vp->opaque, notify);
}

/* ---- legacy interface (BAR0) ---------------------------------------------*/

static void legacy_set_pfn(struct virtio_pci *vp, struct virtq *vq,
			   uint32_t pfn)
{
	uint64_t base = (uint64_t)pfn * LEGACY_ALIGN;
	uint64_t avail = base + virtq_desc_bytes(vq->size);
	uint64_t used = avail + virtq_avail_bytes(vq->size);

	(void)vp;
	used = (used + LEGACY_ALIGN - 1) & ~(uint64_t)(LEGACY_ALIGN - 1);
	virtq_reset(vq);
	vq->desc_addr = base;
	vq->avail_addr = avail;
	vq->used_addr = used;
	vq->enabled = pfn != 0;
}

static void legacy_io(void *opaque, uint64_t addr, void *data, unsigned size,
		      bool is_write)
{
	struct virtio_pci *vp = opaque;
	struct virtq *vq;
	unsigned header;
	uint32_t v = is_write ? load_le(data, size) : 0;
	int notify = -1;

	if (!is_write)
		memset(data, 0xff, size);
	pthread_mutex_lock(&vp->lock);
	vq = virtio_pci_queue(vp, vp->queue_select);
	header = msix_enabled(vp) ? LEGACY_HEADER_MSIX : LEGACY_HEADER;
	if (addr >= header) {
		unsigned off = addr - header;

		if (off + size <= vp->cfg.config_size) {
			if (is_write && vp->ops->write_config)
				vp->ops->write_config(vp->opaque, off, data,
						      size);
			else if (!is_write && vp->ops->read_config)
				vp->ops->read_config(vp->opaque, off, data,
						     size);
		}
		goto out;
	}
	if (!is_write) {
		uint32_t r = 0;

		switch (addr) {
		case LEGACY_HOST_FEATURES:
			r = (uint32_t)vp->device_features;
			break;
		case LEGACY_GUEST_FEATURES:
			r = (uint32_t)vp->driver_features;
			break;
		case LEGACY_QUEUE_PFN:
			r = vq && vq->enabled ? vq->desc_addr / LEGACY_ALIGN
					      : 0;
			break;
		case LEGACY_QUEUE_NUM:
			r = vq ? vp->cfg.queue_max_size : 0;
			break;
		case LEGACY_QUEUE_SEL:
			r = vp->queue_select;
			break;
		case LEGACY_STATUS:
			r = vp->status;
			break;
		case LEGACY_ISR:
			r = vp->isr;
			vp->isr = 0;
			pci_set_intx(&vp->pci, false);
			break;
		case LEGACY_MSIX_CONFIG:
			r = vp->config_vector;
			break;
		case LEGACY_MSIX_QUEUE:
			r = vq ? vq->msix_vector : VIRTIO_MSI_NO_VECTOR;
			break;
		}
		store_le(data, size, r);
		goto out;
	}
	switch (addr) {
	case LEGACY_GUEST_FEATURES:
		vp->legacy_mode = true;
		vp->driver_features = v & (uint32_t)vp->device_features;
		apply_ring_features(vp);
		break;
	case LEGACY_QUEUE_PFN:
		vp->legacy_mode = true;
		if (vq) {
			vq->size = vp->cfg.queue_max_size;
			legacy_set_pfn(vp, vq, v);
		}
		break;
	case LEGACY_QUEUE_SEL:
		vp->queue_select = v;
		break;
	case LEGACY_QUEUE_NOTIFY:
		if (v < vp->cfg.num_queues)
			notify = v;
		break;
	case LEGACY_STATUS:
		write_status(vp, v);
		break;
	case LEGACY_MSIX_CONFIG:
		vp->config_vector = v < vp->msix_vectors ? v
							 : VIRTIO_MSI_NO_VECTOR;
		break;
	case LEGACY_MSIX_QUEUE:
		if (vq)
			vq->msix_vector =
				v < vp->msix_vectors ? v : VIRTIO_MSI_NO_VECTOR;
		break;
	}
out:
	pthread_mutex_unlock(&vp->lock);
	if (notify >= 0 && vp->ops->queue_notify)
		vp->ops->queue_notify(vp->opaque, notify);
}

/* ---- MSI-X table (BAR1; PCI Local Bus 3.0 section 6.8.2) -----------------*/

static void msix_io(void *opaque, uint64_t addr, void *data, unsigned size,
		    bool is_write)
{
	struct virtio_pci *vp = opaque;

	if (!is_write)
		memset(data, 0, size);
	/* dword and qword accesses only, naturally aligned */
	if ((size != 4 && size != 8) || (addr & (size - 1)))
		return;
	pthread_mutex_lock(&vp->lock);
	for (unsigned part = 0; part < size / 4; part++) {
		uint64_t at = addr + 4 * part;
		uint8_t *bytes = (uint8_t *)data + 4 * part;

		if (at < vp->msix_vectors * 16ull) {
			uint32_t *field =
				(uint32_t *)&vp->msix[at / 16] + (at % 16) / 4;

			if (is_write) {
				*field = load_le(bytes, 4);
				if (at % 16 == 12)
					*field &= MSIX_ENTRY_MASKED;
			} else {
				store_le(bytes, 4, *field);
			}
		} else if (!is_write && at >= VIRTIO_PCI_MSIX_PBA_OFFSET &&
			   at < VIRTIO_PCI_MSIX_PBA_OFFSET + 8) {
			store_le(bytes, 4,
				 vp->msix_pending >>
					 (32 *
					  (at - VIRTIO_PCI_MSIX_PBA_OFFSET) /
					  4));
		}
	}
	if (is_write)
		msix_deliver_pending(vp);
	pthread_mutex_unlock(&vp->lock);
}

/* ---- config space ------------------------------------------------------*/

/* The PCI configuration access capability (section 4.1.4.7): a window in
 * config space onto the BARs, for firmware that cannot map them (iPXE
 * insists on its presence).  A write to the data dword writes through;
 * since the PCI core serves config reads from the bytes alone, the read is
 * done when the driver points the window (bar, offset, length), except on
 * the ISR, whose read would clear it. */
static bool pci_cfg_window_byte(unsigned at)
{
	return at == CAP_PCI_CFG + 4 ||
	       (at >= CAP_PCI_CFG + 8 && at < CAP_PCI_CFG + 20);
}

static void pci_cfg_window_access(struct virtio_pci *vp, bool is_write)
{
	uint8_t *c = vp->pci.config;
	unsigned bar = c[CAP_PCI_CFG + 4];
	uint32_t offset = load_le(&c[CAP_PCI_CFG + 8], 4);
	uint32_t length = load_le(&c[CAP_PCI_CFG + 12], 4);
	uint8_t data[4];

	if ((length != 1 && length != 2 && length != 4) ||
	    (offset & (length - 1)) || bar >= PCI_NUM_BARS ||
	    !vp->pci.bar_io[bar] || offset + length > vp->pci.bar_size[bar])
		return;
	if (!is_write && bar == VIRTIO_PCI_MODERN_BAR &&
	    offset >= VIRTIO_PCI_ISR_OFFSET &&
	    offset < VIRTIO_PCI_DEVICE_OFFSET)
		return;
	memcpy(data, &c[CAP_PCI_CFG + 16], 4);
	vp->pci.bar_io[bar](vp, offset, data, length, is_write);
	if (!is_write) {
		pthread_mutex_lock(&vp->lock);
		memcpy(&c[CAP_PCI_CFG + 16], data, length);
		pthread_mutex_unlock(&vp->lock);
	}
}

/* The capability bodies are read-only except the MSI-X enable and mask
 * bits and the access window; the core lets the guest write them, so they
 * are put back here. */
static void config_written(struct pci_device *dev, unsigned off, unsigned size)
{
	struct virtio_pci *vp = dev->opaque;
	bool was_enabled, window = false, window_data = false;

	pthread_mutex_lock(&vp->lock);
	was_enabled = vp->config_template[CAP_MSIX + 3] & 0x80;
	for (unsigned at = off; at < off + size; at++) {
		if (at < CAP_MSIX || at >= CAP_END)
			continue;
		if (pci_cfg_window_byte(at)) {
			window = true;
			window_data |= at >= CAP_PCI_CFG + 16;
		} else if (at == CAP_MSIX + 3)
			vp->pci.config[at] = (vp->pci.config[at] & 0xc0) |
					     (vp->config_template[at] & 0x3f);
		else
			vp->pci.config[at] = vp->config_template[at];
	}
	vp->config_template[CAP_MSIX + 3] = vp->pci.config[CAP_MSIX + 3];
	if (msix_enabled(vp) != was_enabled)
		/* the line is not used while MSI-X is on */
		pci_set_intx(&vp->pci, !msix_enabled(vp) && vp->isr);
	msix_deliver_pending(vp);
	pthread_mutex_unlock(&vp->lock);
	/* the BAR handlers take the lock themselves */
	if (window)
		pci_cfg_window_access(vp, window_data);
}

static void put_vendor_cap(uint8_t *c, unsigned at, unsigned next, unsigned len,
			   unsigned type, unsigned bar, uint32_t offset,
			   uint32_t length)
{
	c[at] = PCI_CAP_ID_VENDOR;
	c[at + 1] = next;
	c[at + 2] = len;
	c[at + 3] = type;
	c[at + 4] = bar;
	store_le(&c[at + 8], 4, offset);
	store_le(&c[at + 12], 4, length);
}

static void platform_reset(void *opaque)
{
	struct virtio_pci *vp = opaque;

	pthread_mutex_lock(&vp->lock);
	device_reset(vp);
	vp->pci.config[CAP_MSIX + 3] &= 0x3f;
	vp->config_template[CAP_MSIX + 3] = vp->pci.config[CAP_MSIX + 3];
	for (unsigned v = 0; v < vp->msix_vectors; v++)
		vp->msix[v] =
			(struct msix_entry){ .control = MSIX_ENTRY_MASKED };
	pthread_mutex_unlock(&vp->lock);
}

static void build_config(struct virtio_pci *vp)
{
	uint8_t *c = vp->pci.config;
	const struct virtio_pci_config *cfg = &vp->cfg;
	uint16_t device_id = cfg->transitional ? cfg->legacy_pci_id
					       : 0x1040 + cfg->device_type;
	unsigned legacy_size = LEGACY_HEADER_MSIX + cfg->config_size;

	store_le(&c[0x00], 2, PCI_VENDOR_REDHAT_QUMRANET);
	store_le(&c[0x02], 2, device_id);
	store_le(&c[0x06], 2, PCI_STATUS_CAP_LIST);
	c[0x08] = cfg->transitional ? 0 : 1; /* revision */
	store_le(&c[0x09], 3, cfg->class_code);
	store_le(&c[0x2c], 2, PCI_VENDOR_REDHAT_QUMRANET);
	/* legacy drivers match the subsystem ID to the device type */
	store_le(&c[0x2e], 2,
		 cfg->transitional ? cfg->device_type
				   : 0x40 + cfg->device_type);
	c[0x34] = CAP_MSIX;
	c[0x3d] = 1; /* INTA# */

	c[CAP_MSIX] = PCI_CAP_ID_MSIX;
	c[CAP_MSIX + 1] = CAP_COMMON;
	store_le(&c[CAP_MSIX + 2], 2, vp->msix_vectors - 1);
	store_le(&c[CAP_MSIX + 4], 4, 0 | VIRTIO_PCI_MSIX_BAR);
	store_le(&c[CAP_MSIX + 8], 4,
		 VIRTIO_PCI_MSIX_PBA_OFFSET | VIRTIO_PCI_MSIX_BAR);
	put_vendor_cap(c, CAP_COMMON, CAP_NOTIFY, 16, VIRTIO_PCI_CAP_COMMON_CFG,
		       VIRTIO_PCI_MODERN_BAR, VIRTIO_PCI_COMMON_OFFSET,
		       COMMON_SIZE);
	put_vendor_cap(c, CAP_NOTIFY, CAP_ISR, 20, VIRTIO_PCI_CAP_NOTIFY_CFG,
		       VIRTIO_PCI_MODERN_BAR, VIRTIO_PCI_NOTIFY_OFFSET,
		       VIRTIO_PCI_NOTIFY_MULTIPLIER * cfg->num_queues);
	store_le(&c[CAP_NOTIFY + 16], 4, VIRTIO_PCI_NOTIFY_MULTIPLIER);
	put_vendor_cap(c, CAP_ISR, CAP_DEVICE, 16, VIRTIO_PCI_CAP_ISR_CFG,
		       VIRTIO_PCI_MODERN_BAR, VIRTIO_PCI_ISR_OFFSET, 1);
	put_vendor_cap(c, CAP_PCI_CFG, 0, 20, VIRTIO_PCI_CAP_PCI_CFG, 0, 0, 0);
	put_vendor_cap(c, CAP_DEVICE, CAP_PCI_CFG, 16,
		       VIRTIO_PCI_CAP_DEVICE_CFG, VIRTIO_PCI_MODERN_BAR,
		       VIRTIO_PCI_DEVICE_OFFSET, cfg->config_size);

	if (cfg->transitional) {
		unsigned bar_size = 32;

		while (bar_size < legacy_size)
			bar_size <<= 1;
		vp->pci.bar_size[VIRTIO_PCI_LEGACY_BAR] = bar_size;
		vp->pci.bar_is_io[VIRTIO_PCI_LEGACY_BAR] = true;
		vp->pci.bar_io[VIRTIO_PCI_LEGACY_BAR] = legacy_io;
	}
	vp->pci.bar_size[VIRTIO_PCI_MSIX_BAR] = MSIX_BAR_SIZE;
	vp->pci.bar_io[VIRTIO_PCI_MSIX_BAR] = msix_io;
	vp->pci.bar_size[VIRTIO_PCI_MODERN_BAR] = MODERN_BAR_SIZE;
	vp->pci.bar_io[VIRTIO_PCI_MODERN_BAR] = modern_io;
	c[0x10 + 4 * VIRTIO_PCI_MODERN_BAR] = 0x04; /* 64-bit memory */
	vp->pci.opaque = vp;
	vp->pci.config_written = config_written;
	memcpy(vp->config_template, c, sizeof(vp->config_template));
}

struct virtio_pci *virtio_pci_create(struct vmm *vm, unsigned slot,
				     const struct virtio_pci_config *cfg,
				     const struct virtio_device_ops *ops,
				     void *opaque, char *err, size_t errlen)
{
	struct virtio_pci *vp;
	int ret;

	if (!cfg->num_queues || cfg->num_queues > VIRTIO_PCI_MAX_QUEUES ||
	    !cfg->queue_max_size || cfg->queue_max_size > VIRTQ_MAX_SIZE ||
	    (cfg->queue_max_size & (cfg->queue_max_size - 1)) ||
	    cfg->config_size > 0x100) {
		snprintf(err, errlen, "virtio: bad device layout");
		return NULL;
	}
	vp = calloc(1, sizeof(*vp));
	if (!vp) {
		snprintf(err, errlen, "virtio: out of memory");
		return NULL;
	}
	vp->vm = vm;
	vp->cfg = *cfg;
	vp->ops = ops;
	vp->opaque = opaque;
	vp->device_features = cfg->features | 1ull << VIRTIO_F_VERSION_1;
	vp->msix_vectors = cfg->num_queues + 1;
	pthread_mutex_init(&vp->lock, NULL);
	for (unsigned q = 0; q < cfg->num_queues; q++)
		vp->queue[q].vm = vm;
	build_config(vp);
	for (unsigned v = 0; v < vp->msix_vectors; v++)
		vp->msix[v].control = MSIX_ENTRY_MASKED;
	reset_registers(vp);
	ret = pci_register_device(vm, &vp->pci, slot);
	if (ret) {
		snprintf(err, errlen, "virtio: PCI slot %u: %s", slot,
			 strerror(-ret));
		pthread_mutex_destroy(&vp->lock);
		free(vp);
		return NULL;
	}
	vmm_on_reset(vm, platform_reset, vp);
	return vp;
}

void virtio_pci_destroy(struct virtio_pci *vp)
{
	if (!vp)
		return;
	pthread_mutex_destroy(&vp->lock);
	free(vp);
}
