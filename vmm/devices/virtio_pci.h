/* SPDX-License-Identifier: MIT */
/*
 * imgvm: the virtio PCI transport (virtio 1.0 section 4.1), shared by every
 * virtio device.  A device gives its type, features, queues and config
 * space; the transport does the rest: the modern capabilities in a memory
 * BAR, the legacy I/O interface of a transitional device, MSI-X with an
 * INTx fallback, feature negotiation, status and reset.
 *
 * Locking: one lock per device (virtio_pci_lock).  Config accessors and
 * the reset hook run with it held; queue_notify runs without it (the
 * device takes it, and may drop it around work that must not hold it).
 */
#ifndef IMGVM_VIRTIO_PCI_H
#define IMGVM_VIRTIO_PCI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmm/devices/virtqueue.h"
#include "vmm/vmm.h"

/* device-independent feature bits (section 6) */
#define VIRTIO_F_NOTIFY_ON_EMPTY 24
#define VIRTIO_F_ANY_LAYOUT 27
#define VIRTIO_F_RING_INDIRECT_DESC 28
#define VIRTIO_F_RING_EVENT_IDX 29
#define VIRTIO_F_VERSION_1 32

/* device status (section 2.1) */
#define VIRTIO_STATUS_ACKNOWLEDGE 0x01
#define VIRTIO_STATUS_DRIVER 0x02
#define VIRTIO_STATUS_DRIVER_OK 0x04
#define VIRTIO_STATUS_FEATURES_OK 0x08
#define VIRTIO_STATUS_NEEDS_RESET 0x40
#define VIRTIO_STATUS_FAILED 0x80

#define VIRTIO_MSI_NO_VECTOR 0xffff
#define VIRTIO_PCI_MAX_QUEUES 8

struct virtio_pci;

struct virtio_device_ops {
	/* The driver made buffers available on queue (lock not held). */
	void (*queue_notify)(void *opaque, unsigned queue);
	/* Device config space, off + size <= config_size (lock held). */
	void (*read_config)(void *opaque, unsigned off, void *data,
			    unsigned size);
	void (*write_config)(void *opaque, unsigned off, const void *data,
			     unsigned size);
	/* The driver reset the device, or the platform reset (lock held). */
	void (*reset)(void *opaque);
};

struct virtio_pci_config {
	uint16_t device_type;	/* virtio device ID: 1 network, 2 block... */
	uint16_t legacy_pci_id; /* transitional PCI device ID (0x1000...) */
	bool transitional;	/* also the legacy I/O interface */
	uint32_t class_code;	/* PCI class, subclass, prog-if */
	uint64_t features;	/* device features; VERSION_1 is added */
	unsigned num_queues;
	uint16_t queue_max_size;
	unsigned config_size;
};

/* Registers the PCI function at slot; NULL on error (message in err). */
struct virtio_pci *virtio_pci_create(struct vmm *vm, unsigned slot,
				     const struct virtio_pci_config *cfg,
				     const struct virtio_device_ops *ops,
				     void *opaque, char *err, size_t errlen);
void virtio_pci_destroy(struct virtio_pci *vp);

void virtio_pci_lock(struct virtio_pci *vp);
void virtio_pci_unlock(struct virtio_pci *vp);

/* With the lock held: */
struct virtq *virtio_pci_queue(struct virtio_pci *vp, unsigned queue);
/* DRIVER_OK set, not broken, not being reset. */
bool virtio_pci_running(const struct virtio_pci *vp);
uint64_t virtio_pci_features(const struct virtio_pci *vp);
bool virtio_pci_has_feature(const struct virtio_pci *vp, unsigned bit);
/* Interrupt for used buffers on queue, when the driver wants one. */
void virtio_pci_queue_interrupt(struct virtio_pci *vp, unsigned queue);
/* The device config changed (link status...). */
void virtio_pci_config_changed(struct virtio_pci *vp);
/* The guest broke the device's rules: DEVICE_NEEDS_RESET, the queues are
 * left alone until the driver resets it.  reason is kept for the log. */
void virtio_pci_set_broken(struct virtio_pci *vp, const char *reason);
/* Empty string, or why the device went broken. */
const char *virtio_pci_broken_reason(const struct virtio_pci *vp);

/* The PCI function (unit tests drive its config space and BARs). */
struct pci_device *virtio_pci_device(struct virtio_pci *vp);

/* BAR layout, for tests and the option ROM of a transitional device. */
#define VIRTIO_PCI_LEGACY_BAR 0
#define VIRTIO_PCI_MSIX_BAR 1
#define VIRTIO_PCI_MODERN_BAR 4
#define VIRTIO_PCI_COMMON_OFFSET 0x0000
#define VIRTIO_PCI_ISR_OFFSET 0x1000
#define VIRTIO_PCI_DEVICE_OFFSET 0x2000
#define VIRTIO_PCI_NOTIFY_OFFSET 0x3000
#define VIRTIO_PCI_NOTIFY_MULTIPLIER 4
#define VIRTIO_PCI_MSIX_PBA_OFFSET 0x800

#endif
