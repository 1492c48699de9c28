/* SPDX-License-Identifier: MIT */
/*
 * imgvm: the interface between the machine core (the .c files in vmm/) and the emulated
 * devices (vmm/devices/<device>.c).  A device is one file; it registers its
 * port/MMIO ranges, or a PCI function, with the machine, and a reset hook.
 *
 * Handlers run on vCPU threads.  With several vCPUs they may run
 * concurrently, so each device takes its own lock.
 */
#ifndef IMGVM_VMM_H
#define IMGVM_VMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct vmm;

/* ---- guest memory ------------------------------------------------------*/

/* Host pointer for guest-physical [gpa, gpa+len) when the whole range is
 * guest RAM (one contiguous slot), NULL otherwise.  Devices must check: a
 * guest may point DMA anywhere. */
void *vmm_gpa_to_hva(struct vmm *vm, uint64_t gpa, uint64_t len);
uint64_t vmm_ram_size(const struct vmm *vm);

/* ---- device memory ----------------------------------------------------*/

/* Host memory the guest reaches at gpa as plain RAM, without exits (a
 * framebuffer BAR).  index < VMM_DEVICE_MEMORY_SLOTS names the region;
 * size 0 removes it.  With dirty_log, KVM records the pages written. */
#define VMM_DEVICE_MEMORY_SLOTS 2
int vmm_map_device_memory(struct vmm *vm, unsigned index, uint64_t gpa,
			  void *hva, uint64_t size, bool dirty_log);
/* ORs the pages of region index written since the last call into bitmap
 * (bit n = 4 KiB page n).  Nothing without KVM (unit tests), where such
 * writes arrive as MMIO instead.  Returns 0 or -errno. */
int vmm_device_memory_dirty(struct vmm *vm, unsigned index,
			    unsigned long *bitmap);

/* The legacy VGA window 0xA0000-0xBFFFF stops being RAM: accesses there
 * exit as MMIO, for a VGA's memory.  Call before the machine runs. */
void vmm_open_vga_window(struct vmm *vm);

/* ---- port I/O and MMIO -------------------------------------------------*/

/* addr is the offset from the registered base; size is 1, 2, 4 or 8; data
 * is little-endian in host memory (read: the handler fills it). */
typedef void (*vmm_io_fn)(void *opaque, uint64_t addr, void *data,
			  unsigned size, bool is_write);

int vmm_register_pio(struct vmm *vm, uint16_t base, uint16_t len,
		     vmm_io_fn fn, void *opaque);
int vmm_register_mmio(struct vmm *vm, uint64_t base, uint64_t len,
		      vmm_io_fn fn, void *opaque);
/* Remove the range registered at base with this opaque (BAR moved). */
void vmm_unregister_pio(struct vmm *vm, uint16_t base, void *opaque);
void vmm_unregister_mmio(struct vmm *vm, uint64_t base, void *opaque);

/* ---- interrupts --------------------------------------------------------*/

/* Level of an in-kernel irqchip input (GSI: 0-15 ISA, 16-23 IOAPIC). */
void vmm_set_irq(struct vmm *vm, unsigned gsi, bool level);
/* Deliver a message-signalled interrupt. */
void vmm_send_msi(struct vmm *vm, uint64_t address, uint32_t data);

/* ---- lifecycle ---------------------------------------------------------*/

/* Called when the platform resets (power on, guest reboot): the device
 * returns to its power-on state. */
void vmm_on_reset(struct vmm *vm, void (*fn)(void *opaque), void *opaque);
/* Ask the machine to stop with a one-line reason (unhandled device state
 * that leaves the guest stuck).  exit_code != 0. */
void vmm_request_stop(struct vmm *vm, int exit_code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Guest asked for power-off / reset (ACPI, 0xCF9, keyboard controller). */
void vmm_request_poweroff(struct vmm *vm);
void vmm_request_reset(struct vmm *vm);

/* ---- PCI (vmm/pci.c: host bridge, config mechanism #1) ---------------*/

#define PCI_NUM_BARS 6

struct pci_device {
	uint8_t config[256];          /* header + capabilities, little-endian */
	/* BARs: size (power of two, 0 = unused) and kind; the core does
	 * sizing and decoding and registers bar_io at the programmed address
	 * when the guest enables decoding in the command register. */
	uint64_t bar_size[PCI_NUM_BARS];
	bool bar_is_io[PCI_NUM_BARS];
	vmm_io_fn bar_io[PCI_NUM_BARS];
	void *opaque;                 /* passed to bar_io and the hooks */
	/* Optional: a config write the device must see (MSI capability,
	 * command register).  Called after the core stored the bytes. */
	void (*config_written)(struct pci_device *dev, unsigned off,
			       unsigned size);
	/* Optional: a memory BAR started (mapped) or stopped decoding at
	 * addr, so that the device can map its memory there (a framebuffer
	 * as a KVM memory slot).  Called with the bus lock held. */
	void (*bar_moved)(struct pci_device *dev, unsigned bar, uint64_t addr,
			  bool mapped);
	/* Filled by the core */
	struct vmm *vm;
	unsigned devfn;
	unsigned gsi;                 /* INTx routed here */
	uint64_t bar_addr[PCI_NUM_BARS];
	bool bar_mapped[PCI_NUM_BARS];
};

/* Register a function at slot (device number) on bus 0; the caller filled
 * vendor/device/class and the interrupt pin in config. */
int pci_register_device(struct vmm *vm, struct pci_device *dev, unsigned slot);
/* INTx line level (honours the command register's interrupt-disable bit). */
void pci_set_intx(struct pci_device *dev, bool level);
/* MSI helper: when the device's MSI capability at cap_off is enabled,
 * send its message and return true; false means use INTx. */
bool pci_msi_notify(struct pci_device *dev, unsigned cap_off);

/* ---- firmware configuration (vmm/devices/fw_cfg.c) ---------------------*/

struct fw_cfg;
/* Add a named file ("bootorder", "etc/e820", ...); data is copied. */
int fw_cfg_add_file(struct fw_cfg *fc, const char *name, const void *data,
		    size_t len);

#endif
