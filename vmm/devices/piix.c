// SPDX-License-Identifier: MIT
/*
 * The i440FX/PIIX chipset as SeaBIOS knows it from QEMU's "pc" machine:
 *   00:00.0 i440FX host bridge (8086:1237); PAM0 starts as "not RAM", so
 *           SeaBIOS copies its code from the flash below 4 GiB into the
 *           (always writable) RAM below 1 MiB, as on QEMU;
 *   00:01.0 PIIX3 ISA bridge (8086:7000), PIRQ route registers 0x60-0x63;
 *   00:01.3 PIIX4 power management (8086:7113): ACPI PM1 event/control
 *           blocks and the PM timer at the base in config 0x40 (enabled
 *           by bit 0 of 0x80), SCI on IRQ 9; APM control port 0xB2 turns
 *           ACPI mode on and off; GPE0 block at 0xAFE0.
 * SeaBIOS finds the PIIX4 PM function and builds the ACPI tables itself
 * (FADT pointing at these blocks, MADT, DSDT with _S5).  The APMC enable
 * bit in DEVACTB is preset so SeaBIOS skips SMM setup: we have no SMM.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vmm/machine.h"

#define PM_SLOT 1
#define PM_FUNCTION 3
#define PM_IO_SIZE 64
#define PM_TIMER_HZ 3579545ull
#define PM_SCI_IRQ 9

#define PM_CONFIG_BASE 0x40
#define PM_CONFIG_MISC 0x80
#define PM_CONFIG_DEVACTB 0x58

#define PM1_STS 0x00
#define PM1_EN 0x02
#define PM1_CNT 0x04
#define PM_TMR 0x08

#define PM1_STS_TMR 0x0001
#define PM1_STS_GBL 0x0020
#define PM1_STS_PWRBTN 0x0100
#define PM1_STS_RTC 0x0400
#define PM1_STS_WAK 0x8000
#define PM1_CNT_SCI_EN 0x0001
#define PM1_CNT_SLP_EN 0x2000

/* System control port A: bit 1 = A20 gate (always on here), bit 0 set =
 * fast reset */
#define PORT_A 0x92
#define PORT_A_RESET 0x01
#define PORT_A_A20 0x02
#define APM_CNT_PORT 0xb2
#define APM_ACPI_ENABLE 0xf1
#define APM_ACPI_DISABLE 0xf0
#define GPE0_PORT 0xafe0
#define GPE0_SIZE 4
/* QEMU's PCI hotplug registers; SeaBIOS reads the removable-slot mask */
#define PCIHP_PORT 0xae00
#define PCIHP_SIZE 0x14

struct piix {
	struct vmm *vm;
	pthread_mutex_t lock;
	struct pci_device host;
	struct pci_device isa;
	struct pci_device pm;
	uint16_t pm_io_base; /* 0 = not decoded */
	uint16_t pm1_sts, pm1_en, pm1_cnt;
	uint16_t gpe_sts, gpe_en;
	uint8_t apm_cnt, apm_sts;
	uint8_t port_a;
	bool sci_level;
	struct timespec timer_start;
};

static void put_le16(uint8_t *p, uint16_t v)
{
	p[0] = v;
	p[1] = v >> 8;
}

static void put_le32(uint8_t *p, uint32_t v)
{
	put_le16(p, v);
	put_le16(p + 2, v >> 16);
}

static uint32_t pm_timer_value(const struct piix *p)
{
	struct timespec now;
	uint64_t sec, nsec;

	clock_gettime(CLOCK_MONOTONIC, &now);
	sec = now.tv_sec - p->timer_start.tv_sec;
	if (now.tv_nsec < p->timer_start.tv_nsec) {
		sec--;
		nsec = now.tv_nsec + 1000000000 - p->timer_start.tv_nsec;
	} else {
		nsec = now.tv_nsec - p->timer_start.tv_nsec;
	}
	/* 24-bit counter (the FADT does not claim a 32-bit one) */
	return (uint32_t)(sec * PM_TIMER_HZ + nsec * PM_TIMER_HZ / 1000000000) &
	       0xffffff;
}

static void pm_update_sci(struct piix *p)
{
	bool level =
		(p->pm1_sts & p->pm1_en &
		 (PM1_STS_TMR | PM1_STS_GBL | PM1_STS_PWRBTN | PM1_STS_RTC)) ||
		(p->gpe_sts & p->gpe_en);

	if (level != p->sci_level) {
		p->sci_level = level;
		vmm_set_irq(p->vm, PM_SCI_IRQ, level);
	}
}

static void pm_control_write(struct piix *p, uint16_t value)
{
	p->pm1_cnt = value & ~PM1_CNT_SLP_EN;
	if (value & PM1_CNT_SLP_EN) {
		unsigned sleep_type = (value >> 10) & 7;

		/* SeaBIOS's SSDT: _S3 is type 1, _S4 and _S5 type 0.  We
		 * cannot suspend; a failed S3 just returns to the guest. */
		if (sleep_type != 1)
			vmm_request_poweroff(p->vm);
	}
}

static void pm_io(void *opaque, uint64_t addr, void *data, unsigned size,
		  bool is_write)
{
	struct piix *p = opaque;
	uint8_t regs[PM_IO_SIZE] = { 0 };
	uint32_t value = 0;

	if (addr + size > PM_IO_SIZE) {
		if (!is_write)
			memset(data, 0xff, size);
		return;
	}
	pthread_mutex_lock(&p->lock);
	if (!is_write) {
		put_le16(regs + PM1_STS, p->pm1_sts);
		put_le16(regs + PM1_EN, p->pm1_en);
		put_le16(regs + PM1_CNT, p->pm1_cnt);
		put_le32(regs + PM_TMR, pm_timer_value(p));
		memcpy(data, regs + addr, size);
		pthread_mutex_unlock(&p->lock);
		return;
	}
	memcpy(&value, data, size);
	/* 16-bit registers, also written as bytes or as one dword */
	for (unsigned i = 0; i < size; i++) {
		unsigned at = addr + i;
		uint8_t byte = value >> (8 * i);

		switch (at) {
		case PM1_STS:
		case PM1_STS + 1:
			/* write one to clear */
			p->pm1_sts &= ~(byte << (8 * (at - PM1_STS)));
			break;
		case PM1_EN:
		case PM1_EN + 1: {
			unsigned shift = 8 * (at - PM1_EN);

			p->pm1_en = (p->pm1_en & ~(0xff << shift)) |
				    byte << shift;
			break;
		}
		case PM1_CNT:
			p->pm1_cnt = (p->pm1_cnt & 0xff00) | byte;
			break;
		case PM1_CNT + 1:
			pm_control_write(p, (p->pm1_cnt & 0xff) | byte << 8);
			break;
		}
	}
	pm_update_sci(p);
	pthread_mutex_unlock(&p->lock);
}

static void gpe_io(void *opaque, uint64_t addr, void *data, unsigned size,
		   bool is_write)
{
	struct piix *p = opaque;
	uint8_t *bytes = data;

	pthread_mutex_lock(&p->lock);
	for (unsigned i = 0; i < size; i++) {
		unsigned at = addr + i;
		unsigned shift = 8 * (at & 1);
		uint16_t *reg = at < 2 ? &p->gpe_sts : &p->gpe_en;

		if (at >= GPE0_SIZE) {
			if (!is_write)
				bytes[i] = 0;
			continue;
		}
		if (!is_write)
			bytes[i] = *reg >> shift;
		else if (at < 2)
			*reg &= ~(bytes[i] << shift);
		else
			*reg = (*reg & ~(0xff << shift)) | bytes[i] << shift;
	}
	pm_update_sci(p);
	pthread_mutex_unlock(&p->lock);
}

static void apm_io(void *opaque, uint64_t addr, void *data, unsigned size,
		   bool is_write)
{
	struct piix *p = opaque;
	uint8_t *byte = data;

	if (size != 1) {
		if (!is_write)
			memset(data, 0xff, size);
		return;
	}
	pthread_mutex_lock(&p->lock);
	if (addr == 0) {
		if (!is_write) {
			*byte = p->apm_cnt;
		} else {
			/* on real hardware an SMI handler does this */
			p->apm_cnt = *byte;
			if (*byte == APM_ACPI_ENABLE)
				p->pm1_cnt |= PM1_CNT_SCI_EN;
			else if (*byte == APM_ACPI_DISABLE)
				p->pm1_cnt &= ~PM1_CNT_SCI_EN;
		}
	} else if (is_write) {
		p->apm_sts = *byte;
	} else {
		*byte = p->apm_sts;
	}
	pthread_mutex_unlock(&p->lock);
}

static void port_a_io(void *opaque, uint64_t addr, void *data, unsigned size,
		      bool is_write)
{
	struct piix *p = opaque;
	uint8_t *byte = data;

	(void)addr;
	if (size != 1) {
		if (!is_write)
			memset(data, 0xff, size);
		return;
	}
	pthread_mutex_lock(&p->lock);
	if (!is_write) {
		*byte = p->port_a;
	} else {
		bool reset = *byte & PORT_A_RESET &&
			     !(p->port_a & PORT_A_RESET);

		p->port_a = (*byte & ~PORT_A_RESET) | PORT_A_A20;
		if (reset)
			vmm_request_reset(p->vm);
	}
	pthread_mutex_unlock(&p->lock);
}

static void pcihp_io(void *opaque, uint64_t addr, void *data, unsigned size,
		     bool is_write)
{
	(void)opaque;
	(void)addr;
	/* no hotplug: nothing present, nothing removable */
	if (!is_write)
		memset(data, 0, size);
}

/* Decode the PM I/O block where config 0x40/0x80 say. */
static void pm_config_written(struct pci_device *dev, unsigned off,
			      unsigned size)
{
	struct piix *p = dev->opaque;
	uint16_t base;

	if (off + size <= PM_CONFIG_BASE ||
	    (off >= PM_CONFIG_BASE + 4 && off != PM_CONFIG_MISC))
		return;
	pthread_mutex_lock(&p->lock);
	dev->config[PM_CONFIG_BASE] |= 0x01; /* I/O space indicator */
	base = (dev->config[PM_CONFIG_BASE] | dev->config[PM_CONFIG_BASE + 1]
						      << 8) &
	       0xffc0;
	if (!(dev->config[PM_CONFIG_MISC] & 0x01))
		base = 0;
	if (base != p->pm_io_base) {
		if (p->pm_io_base)
			vmm_unregister_pio(p->vm, p->pm_io_base, p);
		p->pm_io_base = 0;
		if (base &&
		    !vmm_register_pio(p->vm, base, PM_IO_SIZE, pm_io, p))
			p->pm_io_base = base;
	}
	pthread_mutex_unlock(&p->lock);
}

static void piix_fill_config(struct pci_device *dev, uint16_t device,
			     uint8_t revision, uint32_t class_code,
			     uint8_t header_type)
{
	memset(dev->config, 0, sizeof(dev->config));
	put_le16(dev->config + 0x00, 0x8086);
	put_le16(dev->config + 0x02, device);
	dev->config[0x08] = revision;
	dev->config[0x09] = class_code;
	dev->config[0x0a] = class_code >> 8;
	dev->config[0x0b] = class_code >> 16;
	dev->config[0x0e] = header_type;
	put_le16(dev->config + 0x06, 0x0280); /* medium DEVSEL, fast b2b */
	/* QEMU's subsystem IDs: SeaBIOS recognises its platform by them */
	put_le16(dev->config + 0x2c, 0x1af4);
	put_le16(dev->config + 0x2e, 0x1100);
}

static void piix_reset(void *opaque)
{
	struct piix *p = opaque;

	/* i440FX: PAM0 = BIOS area not shadowed yet; SMRAM default */
	p->host.config[0x59] = 0x00;
	memset(p->host.config + 0x5a, 0, 6);
	p->host.config[0x72] = 0x02;
	/* PIIX3: PIRQ routing disabled until the firmware sets it */
	memset(p->isa.config + 0x60, 0x80, 4);
	/* PIIX4 PM: no I/O decoding, APMC "already set up" */
	memset(p->pm.config + 0x40, 0, 0xc0);
	p->pm.config[PM_CONFIG_BASE] = 0x01;
	p->pm.config[PM_CONFIG_DEVACTB + 3] = 0x02;
	pm_config_written(&p->pm, PM_CONFIG_BASE, 4);
	pm_config_written(&p->pm, PM_CONFIG_MISC, 1);

	pthread_mutex_lock(&p->lock);
	p->pm1_sts = 0;
	p->pm1_en = 0;
	p->pm1_cnt = 0;
	p->gpe_sts = 0;
	p->gpe_en = 0;
	p->apm_cnt = 0;
	p->apm_sts = 0;
	p->port_a = PORT_A_A20;
	p->sci_level = false;
	clock_gettime(CLOCK_MONOTONIC, &p->timer_start);
	pthread_mutex_unlock(&p->lock);
}

struct piix *piix_create(struct vmm *vm)
{
	struct piix *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	p->vm = vm;
	pthread_mutex_init(&p->lock, NULL);
	piix_fill_config(&p->host, 0x1237, 0x02, 0x060000, 0x00);
	piix_fill_config(&p->isa, 0x7000, 0x00, 0x060100, 0x80);
	piix_fill_config(&p->pm, 0x7113, 0x03, 0x068000, 0x00);
	p->host.opaque = p;
	p->isa.opaque = p;
	p->pm.opaque = p;
	p->pm.config_written = pm_config_written;
	if (pci_register_function(vm, &p->host, 0, 0) ||
	    pci_register_function(vm, &p->isa, PM_SLOT, 0) ||
	    pci_register_function(vm, &p->pm, PM_SLOT, PM_FUNCTION) ||
	    vmm_register_pio(vm, APM_CNT_PORT, 2, apm_io, p) ||
	    vmm_register_pio(vm, PORT_A, 1, port_a_io, p) ||
	    vmm_register_pio(vm, GPE0_PORT, GPE0_SIZE, gpe_io, p) ||
	    vmm_register_pio(vm, PCIHP_PORT, PCIHP_SIZE, pcihp_io, p)) {
		piix_destroy(p);
		return NULL;
	}
	pci_set_pirq_router(vm, &p->isa);
	piix_reset(p);
	vmm_on_reset(vm, piix_reset, p);
	return p;
}

bool piix_press_power_button(struct piix *p)
{
	bool seen;

	pthread_mutex_lock(&p->lock);
	p->pm1_sts |= PM1_STS_PWRBTN;
	pm_update_sci(p);
	/* the guest listens when it is in ACPI mode with the event enabled */
	seen = (p->pm1_cnt & PM1_CNT_SCI_EN) && (p->pm1_en & PM1_STS_PWRBTN);
	pthread_mutex_unlock(&p->lock);
	return seen;
}

void piix_destroy(struct piix *p)
{
	if (!p)
		return;
	pthread_mutex_destroy(&p->lock);
	free(p);
}
