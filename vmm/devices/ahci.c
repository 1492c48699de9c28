/* SPDX-License-Identifier: MIT */
/*
 * imgvm: AHCI host bus adapter (Serial ATA AHCI 1.3 specification), shown
 * to the guest as an Intel ICH9 AHCI controller (8086:2922) with six ports:
 * ports 0 and 2-5 SATA disks (ata_disk.c), port 1 the SATAPI CD-ROM
 * (atapi.c).
 *
 * The vCPU only updates registers; each port with a device has a worker
 * thread that walks the command list, maps the PRDT straight onto guest
 * memory as an iovec, runs the command (libimg or the ISO file do the
 * vectored I/O into guest memory, no bounce buffer), posts the FIS and
 * raises the interrupt.  One lock per HBA protects all registers.
 *
 * Everything read from guest memory (command headers, FIS, PRDT) is copied
 * once and validated; a pointer outside guest RAM ends the command with an
 * error status, never a host access.
 */
#include "vmm/devices/ahci.h"
#include "vmm/devices/ata.h"

#include "img.h"

#include <endian.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define AHCI_PORTS 6
_Static_assert(AHCI_MAX_DISKS + 1 == AHCI_PORTS, "disks and the CD-ROM");
#define AHCI_SLOTS 32
#define AHCI_ABAR_BAR 5
#define AHCI_ABAR_SIZE 0x1000
#define AHCI_MSI_CAP 0x80
/* PRDT entries mapped per command: Linux uses at most 168. */
#define AHCI_MAX_PRDT 8192
/* Worker threads of the disk port: NCQ commands run concurrently. */
#define AHCI_DISK_WORKERS 4

/* Generic host control registers (AHCI 1.3 section 3.1) */
enum {
	AHCI_CAP = 0x00,
	AHCI_GHC = 0x04,
	AHCI_IS = 0x08,
	AHCI_PI = 0x0C,
	AHCI_VS = 0x10,
	AHCI_CAP2 = 0x24,
	AHCI_PORT_BASE = 0x100,
	AHCI_PORT_STRIDE = 0x80,
};
#define AHCI_CAP_S64A (1u << 31)
#define AHCI_CAP_SNCQ (1u << 30)
#define AHCI_CAP_SCLO (1u << 24)
#define AHCI_CAP_ISS_GEN2 (2u << 20)
#define AHCI_CAP_SAM (1u << 18)
#define AHCI_GHC_HR (1u << 0)
#define AHCI_GHC_IE (1u << 1)
#define AHCI_GHC_AE (1u << 31)

/* Port registers (section 3.3) */
enum {
	PORT_CLB = 0x00,
	PORT_CLBU = 0x04,
	PORT_FB = 0x08,
	PORT_FBU = 0x0C,
	PORT_IS = 0x10,
	PORT_IE = 0x14,
	PORT_CMD = 0x18,
	PORT_TFD = 0x20,
	PORT_SIG = 0x24,
	PORT_SSTS = 0x28,
	PORT_SCTL = 0x2C,
	PORT_SERR = 0x30,
	PORT_SACT = 0x34,
	PORT_CI = 0x38,
	PORT_SNTF = 0x3C,
	PORT_FBS = 0x40,
};
/* PxIS */
#define PORT_IS_DHRS (1u << 0)
#define PORT_IS_PSS (1u << 1)
#define PORT_IS_SDBS (1u << 3)
#define PORT_IS_HBFS (1u << 29)
#define PORT_IS_TFES (1u << 30)
#define PORT_IE_MASK 0xFDC000FFu
/* PxCMD */
#define PORT_CMD_ST (1u << 0)
#define PORT_CMD_SUD (1u << 1)
#define PORT_CMD_POD (1u << 2)
#define PORT_CMD_CLO (1u << 3)
#define PORT_CMD_FRE (1u << 4)
#define PORT_CMD_CCS_SHIFT 8
#define PORT_CMD_FR (1u << 14)
#define PORT_CMD_CR (1u << 15)
/* bits software may write and read back: ATAPI, DLAE, ALPE, ASP... */
#define PORT_CMD_RW_MASK 0x0F000000u
#define PORT_SSTS_UP 0x123 /* device present, Gen2, active */
#define PORT_TFD_NO_DEVICE 0x7F

/* FIS types and the received-FIS area layout (section 4.2.1) */
#define FIS_TYPE_H2D 0x27
#define FIS_TYPE_D2H 0x34
#define FIS_TYPE_SDB 0xA1
#define FIS_TYPE_PIO_SETUP 0x5F
#define RFIS_PIO_SETUP 0x20
#define RFIS_D2H 0x40
#define RFIS_SDB 0x58
#define RFIS_SIZE 0x100
#define H2D_C_BIT 0x80
#define ATA_CONTROL_SRST 0x04

/* Command header (section 4.2.2) and command table (4.2.3) */
#define CMD_HEADER_SIZE 32
#define CMD_HEADER_ATAPI (1u << 5)
#define CMD_HEADER_WRITE (1u << 6)
#define CMD_TABLE_ACMD 0x40
#define CMD_TABLE_PRDT 0x80
#define PRD_SIZE 16

struct ahci_port;

struct ahci_worker {
	struct ahci_port *port;
	bool started;
	pthread_t thread;
	struct iovec *iov; /* AHCI_MAX_PRDT entries */
};

struct ahci_port {
	struct ahci *hba;
	unsigned index;
	struct ata_disk *disk;
	struct atapi *cdrom;

	uint64_t clb, fb;
	uint32_t is, ie, cmd, tfd, sig, ssts, sctl, serr, sact, ci, sntf;

	/* issued slots no worker has taken yet */
	uint32_t pending;
	/* workers running a command */
	unsigned busy;
	/* a non-queued command runs: it runs alone */
	bool exclusive;
	/* NCQ error: no more commands until software clears PxCMD.ST */
	bool halted;
	/* bumped on reset: a command that was running is not completed */
	unsigned generation;
	pthread_cond_t wake;
	unsigned nworkers;
	struct ahci_worker worker[AHCI_DISK_WORKERS];
};

struct ahci {
	struct pci_device pci;
	const struct ahci_host_ops *ops;
	void *ctx;
	pthread_mutex_t lock;
	pthread_cond_t idle;
	bool quit;
	uint32_t ghc, is;
	bool irq_level;
	struct ahci_port port[AHCI_PORTS];
};

static bool ahci_port_present(const struct ahci_port *p)
{
	return p->disk || p->cdrom;
}

/* ---- interrupts --------------------------------------------------------*/

/* Recompute IS and the interrupt line; new_event: a cause was just raised,
 * so an MSI is due even if the line was already up. */
static void ahci_update_irq(struct ahci *hba, bool new_event)
{
	bool level;

	for (unsigned i = 0; i < AHCI_PORTS; i++)
		if (hba->port[i].is & hba->port[i].ie)
			hba->is |= 1u << i;
	level = (hba->ghc & AHCI_GHC_IE) && hba->is;
	if (level && (new_event || !hba->irq_level)) {
		if (!hba->ops->msi_notify(hba->ctx, &hba->pci, AHCI_MSI_CAP))
			hba->ops->set_intx(hba->ctx, &hba->pci, true);
	} else if (!level && hba->irq_level) {
		hba->ops->set_intx(hba->ctx, &hba->pci, false);
	}
	hba->irq_level = level;
}

static void ahci_port_raise(struct ahci_port *p, uint32_t bits)
{
	p->is |= bits;
	ahci_update_irq(p->hba, (p->ie & bits) != 0);
}

/* ---- received FIS ------------------------------------------------------*/

static uint8_t *ahci_port_rfis(struct ahci_port *p)
{
	if (!(p->cmd & PORT_CMD_FRE))
		return NULL;
	return p->hba->ops->gpa_to_hva(p->hba->ctx, p->fb, RFIS_SIZE);
}

static void fis_put_registers(uint8_t *fis, const struct ata_command *c)
{
	fis[4] = (uint8_t)c->out_lba;
	fis[5] = (uint8_t)(c->out_lba >> 8);
	fis[6] = (uint8_t)(c->out_lba >> 16);
	fis[7] = c->out_device;
	fis[8] = (uint8_t)(c->out_lba >> 24);
	fis[9] = (uint8_t)(c->out_lba >> 32);
	fis[10] = (uint8_t)(c->out_lba >> 40);
	fis[12] = (uint8_t)c->out_count;
	fis[13] = (uint8_t)(c->out_count >> 8);
}

static void ahci_port_post_d2h(struct ahci_port *p, const struct ata_command *c)
{
	uint8_t *rfis = ahci_port_rfis(p);
	uint8_t fis[20] = { FIS_TYPE_D2H, 0x40, c->status, c->error };

	p->tfd = (uint32_t)c->error << 8 | c->status;
	if (!rfis)
		return;
	fis_put_registers(fis, c);
	memcpy(rfis + RFIS_D2H, fis, sizeof(fis));
}

static void ahci_port_post_pio_setup(struct ahci_port *p,
				     const struct ata_command *c)
{
	uint8_t *rfis = ahci_port_rfis(p);
	uint8_t fis[20] = { FIS_TYPE_PIO_SETUP };

	if (!rfis)
		return;
	fis[1] = 0x40 | (c->protocol == ATA_PROTOCOL_PIO_IN ? 0x20 : 0);
	fis[2] = (uint8_t)((c->status & ~ATA_STATUS_BSY) | ATA_STATUS_DRQ);
	fis[3] = c->error;
	fis_put_registers(fis, c);
	fis[15] = c->status; /* E_Status: the status after the transfer */
	fis[16] = (uint8_t)c->transferred;
	fis[17] = (uint8_t)(c->transferred >> 8);
	memcpy(rfis + RFIS_PIO_SETUP, fis, sizeof(fis));
}

static void ahci_port_post_sdb(struct ahci_port *p, uint8_t status,
			       uint8_t error, uint32_t done)
{
	uint8_t *rfis = ahci_port_rfis(p);
	uint8_t fis[8] = { FIS_TYPE_SDB, 0x40, (uint8_t)(status & 0x77),
			   error };

	/* SDB updates only the status bits it carries */
	p->tfd = (p->tfd & 0x88) | (status & 0x77) | (uint32_t)error << 8;
	if (!rfis)
		return;
	fis[4] = (uint8_t)done;
	fis[5] = (uint8_t)(done >> 8);
	fis[6] = (uint8_t)(done >> 16);
	fis[7] = (uint8_t)(done >> 24);
	memcpy(rfis + RFIS_SDB, fis, sizeof(fis));
}

/* The D2H FIS a device sends when its link comes up or after a soft
 * reset: the signature in the count and LBA registers. */
static void ahci_port_post_signature(struct ahci_port *p)
{
	struct ata_command c = { 0 };

	c.status = p->disk ? ATA_STATUS_DRDY | ATA_STATUS_DSC : 0;
	c.error = 0x01;
	c.out_count = p->sig & 0xFF;
	c.out_lba = (p->sig >> 8) & 0xFFFFFF;
	ahci_port_post_d2h(p, &c);
}

/* ---- port state --------------------------------------------------------*/

/* Wait until the port's worker is between commands (lock held). */
static void ahci_port_drain(struct ahci_port *p)
{
	while (p->busy)
		pthread_cond_wait(&p->hba->idle, &p->hba->lock);
}

static void ahci_port_stop_commands(struct ahci_port *p)
{
	ahci_port_drain(p);
	p->generation++;
	p->ci = 0;
	p->sact = 0;
	p->pending = 0;
	p->halted = false;
}

/* The device side of a reset (COMRESET, HBA reset): link up, signature. */
static void ahci_port_link_reset(struct ahci_port *p)
{
	ahci_port_stop_commands(p);
	if (ahci_port_present(p)) {
		p->ssts = PORT_SSTS_UP;
		p->sig = p->disk ? ATA_SIGNATURE_DISK : ATA_SIGNATURE_ATAPI;
		p->tfd = p->disk ? ATA_STATUS_DRDY | ATA_STATUS_DSC : 0;
		if (p->disk)
			ata_disk_set_ncq_error(p->disk, 0, false);
		ahci_port_post_signature(p);
	} else {
		p->ssts = 0;
		p->sig = 0xFFFFFFFFu;
		p->tfd = PORT_TFD_NO_DEVICE;
	}
}

static void ahci_port_reset_registers(struct ahci_port *p)
{
	ahci_port_stop_commands(p);
	p->is = 0;
	p->ie = 0;
	p->cmd = PORT_CMD_SUD | PORT_CMD_POD;
	p->sctl = 0;
	p->serr = 0;
	p->sntf = 0;
	ahci_port_link_reset(p);
}

static void ahci_hba_reset(struct ahci *hba)
{
	for (unsigned i = 0; i < AHCI_PORTS; i++)
		ahci_port_reset_registers(&hba->port[i]);
	hba->ghc = AHCI_GHC_AE;
	hba->is = 0;
	ahci_update_irq(hba, false);
}

/* ---- command execution (worker thread, lock held) ----------------------*/

static void ahci_port_decode_fis(const uint8_t *fis, struct ata_command *c)
{
	c->command = fis[2];
	c->features = (uint16_t)(fis[3] | fis[11] << 8);
	c->lba = (uint64_t)fis[4] | (uint64_t)fis[5] << 8 |
		 (uint64_t)fis[6] << 16 | (uint64_t)fis[8] << 24 |
		 (uint64_t)fis[9] << 32 | (uint64_t)fis[10] << 40;
	c->device = fis[7];
	c->count = (uint16_t)(fis[12] | fis[13] << 8);
}

/* The PRDT as an iovec over guest memory; adjacent entries that are
 * adjacent in host memory too are merged.  Returns the entry count or
 * -EFAULT when an entry lies outside guest RAM. */
static int ahci_port_map_prdt(struct ahci_port *p, const uint8_t *prdt,
			      unsigned prdtl, struct iovec *iov, size_t *total)
{
	struct ahci *hba = p->hba;
	int n = 0;

	*total = 0;
	for (unsigned i = 0; i < prdtl; i++) {
		uint32_t dw[4];
		uint64_t gpa;
		uint32_t len;
		uint8_t *hva;

		memcpy(dw, prdt + (size_t)i * PRD_SIZE, sizeof(dw));
		gpa = ((uint64_t)le32toh(dw[1]) << 32 | le32toh(dw[0])) & ~1ull;
		len = (le32toh(dw[3]) & 0x3FFFFF) + 1;
		hva = hba->ops->gpa_to_hva(hba->ctx, gpa, len);
		if (!hva)
			return -EFAULT;
		if (n > 0 &&
		    (uint8_t *)iov[n - 1].iov_base + iov[n - 1].iov_len ==
			    hva) {
			iov[n - 1].iov_len += len;
		} else {
			iov[n].iov_base = hva;
			iov[n].iov_len = len;
			n++;
		}
		*total += len;
	}
	return n;
}

/* Software reset through a control FIS (H2D with C clear). */
static void ahci_port_control_fis(struct ahci_port *p, const uint8_t *fis)
{
	if (fis[15] & ATA_CONTROL_SRST) {
		p->tfd = ATA_STATUS_BSY;
	} else {
		p->tfd = p->disk ? ATA_STATUS_DRDY | ATA_STATUS_DSC : 0;
		ahci_port_post_signature(p);
	}
}

static void ahci_port_fail_command(struct ahci_port *p, uint32_t bit,
				   uint32_t extra_is)
{
	struct ata_command c = { 0 };

	ata_command_abort(&c, ATA_ERROR_ABRT);
	ahci_port_post_d2h(p, &c);
	p->ci &= ~bit;
	ahci_port_raise(p, PORT_IS_DHRS | PORT_IS_TFES | extra_is);
}

static void ahci_port_run_slot(struct ahci_port *p, unsigned slot,
			       struct iovec *iov)
{
	struct ahci *hba = p->hba;
	uint32_t bit = 1u << slot;
	unsigned generation = p->generation;
	uint8_t *header, *table;
	uint32_t dw0;
	uint64_t ctba;
	unsigned cfl, prdtl;
	uint8_t fis[64];
	struct ata_command c = { 0 };
	size_t buffer_bytes = 0;
	bool ncq;
	int iovcnt;

	p->cmd = (p->cmd & ~(0x1Fu << PORT_CMD_CCS_SHIFT)) |
		 slot << PORT_CMD_CCS_SHIFT;
	header = hba->ops->gpa_to_hva(hba->ctx, p->clb + slot * CMD_HEADER_SIZE,
				      CMD_HEADER_SIZE);
	if (!header) {
		ahci_port_fail_command(p, bit, PORT_IS_HBFS);
		return;
	}
	memcpy(&dw0, header, 4);
	dw0 = le32toh(dw0);
	memcpy(&ctba, header + 8, 8);
	ctba = le64toh(ctba) & ~0x7Full;
	cfl = dw0 & 0x1F;
	prdtl = dw0 >> 16;
	if (prdtl > AHCI_MAX_PRDT)
		prdtl = 0; /* refused below */
	table = hba->ops->gpa_to_hva(
		hba->ctx, ctba, CMD_TABLE_PRDT + (uint64_t)prdtl * PRD_SIZE);
	if (!table || (dw0 >> 16) > AHCI_MAX_PRDT) {
		ahci_port_fail_command(p, bit, table ? 0 : PORT_IS_HBFS);
		return;
	}
	memcpy(fis, table, sizeof(fis));
	if (fis[0] != FIS_TYPE_H2D || cfl < 5 || cfl > 16) {
		ahci_port_fail_command(p, bit, 0);
		return;
	}
	if (!(fis[1] & H2D_C_BIT)) {
		ahci_port_control_fis(p, fis);
		p->ci &= ~bit;
		return;
	}
	ahci_port_decode_fis(fis, &c);
	memcpy(c.packet, table + CMD_TABLE_ACMD, sizeof(c.packet));
	c.is_write = dw0 & CMD_HEADER_WRITE;
	ncq = p->disk && ata_command_is_ncq(c.command);
	if (ncq && !(p->sact & bit)) {
		/* FPDMA without its PxSACT bit: a host programming error */
		ahci_port_fail_command(p, bit, 0);
		return;
	}
	iovcnt = ahci_port_map_prdt(p, table + CMD_TABLE_PRDT, prdtl, iov,
				    &buffer_bytes);
	if (iovcnt < 0) {
		if (ncq)
			p->sact &= ~bit;
		ahci_port_fail_command(p, bit, 0);
		return;
	}
	c.iov = iov;
	c.iovcnt = iovcnt;
	c.buffer_bytes = buffer_bytes;
	if (!ncq) {
		/* a non-queued command runs alone: wait for the queued ones
		 * other workers run; if another non-queued one got there
		 * first, give the slot back */
		if (p->exclusive) {
			p->pending |= bit;
			return;
		}
		p->exclusive = true;
		while (p->busy > 1)
			pthread_cond_wait(&hba->idle, &hba->lock);
		if (generation != p->generation) {
			p->exclusive = false;
			return; /* the port was reset meanwhile */
		}
	}
	if (ncq)
		p->ci &= ~bit; /* accepted: the slot is free for the host */

	pthread_mutex_unlock(&hba->lock);
	if (p->disk) {
		ata_disk_execute(p->disk, &c);
	} else if (p->cdrom) {
		atapi_execute(p->cdrom, &c);
	} else {
		ata_command_abort(&c, ATA_ERROR_ABRT);
	}
	pthread_mutex_lock(&hba->lock);
	if (!ncq)
		p->exclusive = false;

	if (generation != p->generation)
		return; /* the port was reset meanwhile */
	header = hba->ops->gpa_to_hva(hba->ctx, p->clb + slot * CMD_HEADER_SIZE,
				      CMD_HEADER_SIZE);
	if (header) {
		uint32_t prdbc = htole32((uint32_t)c.transferred);

		memcpy(header + 4, &prdbc, 4);
	}
	if (ncq) {
		if (c.status & ATA_STATUS_ERR) {
			/* the host learns the tag from the NCQ error log */
			ata_disk_set_ncq_error(p->disk, slot, true);
			ahci_port_post_sdb(p, c.status, c.error, 0);
			p->halted = true;
			ahci_port_raise(p, PORT_IS_SDBS | PORT_IS_TFES);
		} else {
			p->sact &= ~bit;
			ahci_port_post_sdb(p, c.status, 0, bit);
			ahci_port_raise(p, PORT_IS_SDBS);
		}
		return;
	}
	if (c.protocol == ATA_PROTOCOL_PIO_IN ||
	    c.protocol == ATA_PROTOCOL_PIO_OUT)
		ahci_port_post_pio_setup(p, &c);
	ahci_port_post_d2h(p, &c);
	p->ci &= ~bit;
	ahci_port_raise(
		p, PORT_IS_DHRS |
			   (c.protocol == ATA_PROTOCOL_PIO_IN ||
					    c.protocol == ATA_PROTOCOL_PIO_OUT
				    ? PORT_IS_PSS
				    : 0) |
			   (c.status & ATA_STATUS_ERR ? PORT_IS_TFES : 0));
}

static bool ahci_port_runnable(const struct ahci_port *p)
{
	return (p->cmd & PORT_CMD_ST) && !p->halted && p->pending &&
	       !p->exclusive;
}

static void *ahci_port_thread(void *arg)
{
	struct ahci_worker *w = arg;
	struct ahci_port *p = w->port;
	struct ahci *hba = p->hba;

	pthread_mutex_lock(&hba->lock);
	for (;;) {
		unsigned slot;

		while (!hba->quit && !ahci_port_runnable(p))
			pthread_cond_wait(&p->wake, &hba->lock);
		if (hba->quit)
			break;
		slot = (unsigned)__builtin_ctz(p->pending);
		p->pending &= ~(1u << slot);
		/* more work: another worker takes it meanwhile */
		if (p->pending)
			pthread_cond_signal(&p->wake);
		p->busy++;
		ahci_port_run_slot(p, slot, w->iov);
		p->busy--;
		pthread_cond_broadcast(&hba->idle);
		if (ahci_port_runnable(p))
			pthread_cond_signal(&p->wake);
	}
	pthread_mutex_unlock(&hba->lock);
	return NULL;
}

/* ---- registers ---------------------------------------------------------*/

static uint32_t ahci_port_read(struct ahci_port *p, unsigned reg)
{
	switch (reg) {
	case PORT_CLB:
		return (uint32_t)p->clb;
	case PORT_CLBU:
		return (uint32_t)(p->clb >> 32);
	case PORT_FB:
		return (uint32_t)p->fb;
	case PORT_FBU:
		return (uint32_t)(p->fb >> 32);
	case PORT_IS:
		return p->is;
	case PORT_IE:
		return p->ie;
	case PORT_CMD:
		return p->cmd | (p->cmd & PORT_CMD_ST ? PORT_CMD_CR : 0) |
		       (p->cmd & PORT_CMD_FRE ? PORT_CMD_FR : 0);
	case PORT_TFD:
		return p->tfd;
	case PORT_SIG:
		return p->sig;
	case PORT_SSTS:
		return p->ssts;
	case PORT_SCTL:
		return p->sctl;
	case PORT_SERR:
		return p->serr;
	case PORT_SACT:
		return p->sact;
	case PORT_CI:
		return p->ci;
	case PORT_SNTF:
		return p->sntf;
	default:
		return 0;
	}
}

static void ahci_port_write_cmd(struct ahci_port *p, uint32_t val)
{
	uint32_t old = p->cmd;

	if (val & PORT_CMD_CLO)
		p->tfd &= ~(uint32_t)(ATA_STATUS_BSY | ATA_STATUS_DRQ);
	p->cmd = (old & (0x1Fu << PORT_CMD_CCS_SHIFT)) | PORT_CMD_SUD |
		 PORT_CMD_POD | (val & (PORT_CMD_ST | PORT_CMD_FRE)) |
		 (val & PORT_CMD_RW_MASK);
	if ((old & PORT_CMD_ST) && !(val & PORT_CMD_ST)) {
		/* the engine stops once the running command is done */
		ahci_port_stop_commands(p);
	}
	if (!(old & PORT_CMD_FRE) && (val & PORT_CMD_FRE) &&
	    ahci_port_present(p) && p->ssts == PORT_SSTS_UP &&
	    (p->cmd & PORT_CMD_ST) == 0)
		ahci_port_post_signature(p);
}

static void ahci_port_write_sctl(struct ahci_port *p, uint32_t val)
{
	unsigned old_det = p->sctl & 0xF, det = val & 0xF;

	p->sctl = val & 0xFFF;
	if (det == 1) {
		/* COMRESET asserted: no link until it is released */
		ahci_port_stop_commands(p);
		p->ssts = 0;
		p->tfd = ATA_STATUS_BSY;
	} else if (det == 4) {
		ahci_port_stop_commands(p);
		p->ssts = 4;
	} else if (det == 0 && old_det != 0) {
		ahci_port_link_reset(p);
		if (ahci_port_present(p))
			p->serr |= 1u << 26; /* DIAG.X: device presence */
	}
}

static void ahci_port_write(struct ahci_port *p, unsigned reg, uint32_t val)
{
	switch (reg) {
	case PORT_CLB:
		p->clb = (p->clb & ~0xFFFFFFFFull) | (val & ~0x3FFu);
		break;
	case PORT_CLBU:
		p->clb = (p->clb & 0xFFFFFFFFull) | (uint64_t)val << 32;
		break;
	case PORT_FB:
		p->fb = (p->fb & ~0xFFFFFFFFull) | (val & ~0xFFu);
		break;
	case PORT_FBU:
		p->fb = (p->fb & 0xFFFFFFFFull) | (uint64_t)val << 32;
		break;
	case PORT_IS:
		p->is &= ~val;
		ahci_update_irq(p->hba, false);
		break;
	case PORT_IE:
		p->ie = val & PORT_IE_MASK;
		ahci_update_irq(p->hba, (p->is & p->ie) != 0);
		break;
	case PORT_CMD:
		ahci_port_write_cmd(p, val);
		break;
	case PORT_SCTL:
		ahci_port_write_sctl(p, val);
		break;
	case PORT_SERR:
		p->serr &= ~val;
		break;
	case PORT_SACT:
		if (p->cmd & PORT_CMD_ST)
			p->sact |= val;
		break;
	case PORT_CI:
		if (!(p->cmd & PORT_CMD_ST) || !ahci_port_present(p))
			break;
		val &= ~p->ci;
		p->ci |= val;
		p->pending |= val;
		if (val)
			pthread_cond_signal(&p->wake);
		break;
	case PORT_SNTF:
		p->sntf &= ~val;
		break;
	default:
		break; /* read-only or reserved */
	}
}

static uint32_t ahci_hba_read(struct ahci *hba, unsigned reg)
{
	switch (reg) {
	case AHCI_CAP:
		return AHCI_CAP_S64A | AHCI_CAP_SNCQ | AHCI_CAP_SCLO |
		       AHCI_CAP_ISS_GEN2 | AHCI_CAP_SAM |
		       (AHCI_SLOTS - 1) << 8 | (AHCI_PORTS - 1);
	case AHCI_GHC:
		return hba->ghc;
	case AHCI_IS:
		return hba->is;
	case AHCI_PI:
		return (1u << AHCI_PORTS) - 1;
	case AHCI_VS:
		return 0x00010300; /* 1.3 */
	default:
		return 0;
	}
}

static void ahci_hba_write(struct ahci *hba, unsigned reg, uint32_t val)
{
	switch (reg) {
	case AHCI_GHC:
		if (val & AHCI_GHC_HR) {
			ahci_hba_reset(hba);
			break;
		}
		hba->ghc = AHCI_GHC_AE | (val & AHCI_GHC_IE);
		ahci_update_irq(hba, false);
		break;
	case AHCI_IS:
		hba->is &= ~val;
		ahci_update_irq(hba, false);
		break;
	default:
		break;
	}
}

static uint32_t ahci_read32(struct ahci *hba, unsigned off)
{
	if (off >= AHCI_PORT_BASE) {
		unsigned port = (off - AHCI_PORT_BASE) / AHCI_PORT_STRIDE;

		if (port >= AHCI_PORTS)
			return 0;
		return ahci_port_read(&hba->port[port],
				      (off - AHCI_PORT_BASE) %
					      AHCI_PORT_STRIDE);
	}
	return ahci_hba_read(hba, off);
}

static void ahci_write32(struct ahci *hba, unsigned off, uint32_t val)
{
	if (off >= AHCI_PORT_BASE) {
		unsigned port = (off - AHCI_PORT_BASE) / AHCI_PORT_STRIDE;

		if (port < AHCI_PORTS)
			ahci_port_write(
				&hba->port[port],
				(off - AHCI_PORT_BASE) % AHCI_PORT_STRIDE, val);
		return;
	}
	ahci_hba_write(hba, off, val);
}

/* Registers whose writes are "write 1 to clear/set": a partial write
 * leaves the other bytes as zero, not as their current value. */
static bool ahci_register_is_w1(unsigned off)
{
	unsigned reg;

	if (off == AHCI_IS)
		return true;
	if (off < AHCI_PORT_BASE)
		return false;
	reg = (off - AHCI_PORT_BASE) % AHCI_PORT_STRIDE;
	return reg == PORT_IS || reg == PORT_SERR || reg == PORT_SACT ||
	       reg == PORT_CI || reg == PORT_SNTF;
}

static void ahci_mmio(void *opaque, uint64_t addr, void *data, unsigned size,
		      bool is_write)
{
	struct ahci *hba = opaque;
	unsigned off = (unsigned)(addr & ~3ull);
	unsigned shift = (unsigned)(addr & 3) * 8;

	if (addr >= AHCI_ABAR_SIZE || size == 0 || size > 8) {
		if (!is_write)
			memset(data, 0, size);
		return;
	}
	pthread_mutex_lock(&hba->lock);
	if (size == 8 && shift == 0) {
		uint64_t v;

		if (is_write) {
			memcpy(&v, data, 8);
			v = le64toh(v);
			ahci_write32(hba, off, (uint32_t)v);
			ahci_write32(hba, off + 4, (uint32_t)(v >> 32));
		} else {
			v = ahci_read32(hba, off) |
			    (uint64_t)ahci_read32(hba, off + 4) << 32;
			v = htole64(v);
			memcpy(data, &v, 8);
		}
	} else if (size + shift / 8 <= 4) {
		uint32_t mask = size == 4 ? 0xFFFFFFFFu
					  : ((1u << (size * 8)) - 1) << shift;
		uint32_t v = 0;

		if (is_write) {
			memcpy(&v, data, size);
			v = le32toh(v) << shift;
			if (size != 4 && !ahci_register_is_w1(off))
				v |= ahci_read32(hba, off) & ~mask;
			ahci_write32(hba, off, v);
		} else {
			v = htole32((ahci_read32(hba, off) & mask) >> shift);
			memcpy(data, &v, size);
		}
	} else if (!is_write) {
		memset(data, 0, size); /* access straddling two registers */
	}
	pthread_mutex_unlock(&hba->lock);
}

/* ---- PCI function and lifecycle ----------------------------------------*/

static void ahci_pci_setup(struct ahci *hba)
{
	uint8_t *cfg = hba->pci.config;

	memset(cfg, 0, sizeof(hba->pci.config));
	cfg[0x00] = 0x86; /* Intel */
	cfg[0x01] = 0x80;
	cfg[0x02] = 0x22; /* ICH9 AHCI */
	cfg[0x03] = 0x29;
	cfg[0x06] = 0x10; /* status: capabilities list */
	cfg[0x08] = 0x02; /* revision */
	cfg[0x09] = 0x01; /* AHCI 1.0 programming interface */
	cfg[0x0A] = 0x06; /* SATA */
	cfg[0x0B] = 0x01; /* mass storage */
	cfg[0x2C] = 0xF4; /* subsystem: 1af4:1100, as QEMU's */
	cfg[0x2D] = 0x1A;
	cfg[0x2E] = 0x00;
	cfg[0x2F] = 0x11;
	cfg[0x34] = AHCI_MSI_CAP;
	cfg[0x3D] = 0x01; /* INTA# */
	/* MSI: one vector, 64-bit address */
	cfg[AHCI_MSI_CAP + 0] = 0x05;
	cfg[AHCI_MSI_CAP + 1] = 0x00;
	cfg[AHCI_MSI_CAP + 2] = 0x80;
	hba->pci.bar_size[AHCI_ABAR_BAR] = AHCI_ABAR_SIZE;
	hba->pci.bar_is_io[AHCI_ABAR_BAR] = false;
	hba->pci.bar_io[AHCI_ABAR_BAR] = ahci_mmio;
	hba->pci.opaque = hba;
}

static void ahci_platform_reset(void *opaque)
{
	struct ahci *hba = opaque;

	pthread_mutex_lock(&hba->lock);
	for (unsigned i = 0; i < AHCI_PORTS; i++) {
		struct ahci_port *p = &hba->port[i];

		ahci_port_drain(p);
		p->clb = 0;
		p->fb = 0;
		if (p->disk)
			ata_disk_reset(p->disk);
		if (p->cdrom)
			atapi_reset(p->cdrom);
	}
	ahci_hba_reset(hba);
	pthread_mutex_unlock(&hba->lock);
}

static void ahci_stop_threads(struct ahci *hba)
{
	pthread_mutex_lock(&hba->lock);
	hba->quit = true;
	for (unsigned i = 0; i < AHCI_PORTS; i++)
		pthread_cond_broadcast(&hba->port[i].wake);
	pthread_mutex_unlock(&hba->lock);
	for (unsigned i = 0; i < AHCI_PORTS; i++)
		for (unsigned j = 0; j < hba->port[i].nworkers; j++) {
			struct ahci_worker *w = &hba->port[i].worker[j];

			if (w->started) {
				pthread_join(w->thread, NULL);
				w->started = false;
			}
		}
}

void ahci_destroy(struct ahci *hba)
{
	if (!hba)
		return;
	ahci_stop_threads(hba);
	for (unsigned i = 0; i < AHCI_PORTS; i++) {
		struct ahci_port *p = &hba->port[i];

		ata_disk_destroy(p->disk);
		atapi_destroy(p->cdrom);
		for (unsigned j = 0; j < p->nworkers; j++)
			free(p->worker[j].iov);
		pthread_cond_destroy(&p->wake);
	}
	pthread_cond_destroy(&hba->idle);
	pthread_mutex_destroy(&hba->lock);
	free(hba);
}

struct ahci *ahci_create_with_ops(const struct ahci_host_ops *ops, void *ctx,
				  unsigned devfn, const struct ahci_config *cfg,
				  char *err, size_t errlen)
{
	struct ahci *hba = calloc(1, sizeof(*hba));
	int ret;

	if (!hba) {
		snprintf(err, errlen, "ahci: out of memory");
		return NULL;
	}
	hba->ops = ops;
	hba->ctx = ctx;
	pthread_mutex_init(&hba->lock, NULL);
	pthread_cond_init(&hba->idle, NULL);
	for (unsigned i = 0; i < AHCI_PORTS; i++) {
		hba->port[i].hba = hba;
		hba->port[i].index = i;
		pthread_cond_init(&hba->port[i].wake, NULL);
	}
	for (unsigned i = 0; i < AHCI_MAX_DISKS; i++) {
		struct ahci_port *p = &hba->port[ahci_disk_port(i)];

		if (!cfg->disk[i])
			continue;
		p->disk = ata_disk_create(cfg->disk[i], cfg->disk_read_only[i],
					  p->index);
		if (!p->disk) {
			snprintf(err, errlen, "ahci: out of memory");
			goto fail;
		}
	}
	if (cfg->cdrom_path) {
		hba->port[1].cdrom =
			atapi_create(cfg->cdrom_path, 1, err, errlen);
		if (!hba->port[1].cdrom)
			goto fail;
	}
	for (unsigned i = 0; i < AHCI_PORTS; i++) {
		struct ahci_port *p = &hba->port[i];

		if (!ahci_port_present(p))
			continue;
		/* the CD-ROM has no command queue: one worker */
		p->nworkers = p->disk ? AHCI_DISK_WORKERS : 1;
		for (unsigned j = 0; j < p->nworkers; j++) {
			struct ahci_worker *w = &p->worker[j];

			w->port = p;
			w->iov = calloc(AHCI_MAX_PRDT, sizeof(*w->iov));
			if (!w->iov) {
				snprintf(err, errlen, "ahci: out of memory");
				goto fail;
			}
			ret = pthread_create(&w->thread, NULL, ahci_port_thread,
					     w);
			if (ret) {
				snprintf(err, errlen,
					 "ahci: cannot start thread: %s",
					 strerror(ret));
				goto fail;
			}
			w->started = true;
		}
	}
	pthread_mutex_lock(&hba->lock);
	ahci_hba_reset(hba);
	pthread_mutex_unlock(&hba->lock);
	ahci_pci_setup(hba);
	ret = ops->register_pci(ctx, &hba->pci, devfn >> 3);
	if (ret < 0) {
		snprintf(err, errlen, "ahci: cannot register PCI device: %s",
			 strerror(-ret));
		goto fail;
	}
	ops->on_reset(ctx, ahci_platform_reset, hba);
	return hba;
fail:
	ahci_destroy(hba);
	return NULL;
}

struct pci_device *ahci_pci_device(struct ahci *hba)
{
	return &hba->pci;
}

void ahci_wait_idle(struct ahci *hba)
{
	pthread_mutex_lock(&hba->lock);
	for (;;) {
		bool idle = true;

		for (unsigned i = 0; i < AHCI_PORTS; i++) {
			struct ahci_port *p = &hba->port[i];

			if (p->busy || ahci_port_runnable(p))
				idle = false;
		}
		if (idle)
			break;
		pthread_cond_wait(&hba->idle, &hba->lock);
	}
	pthread_mutex_unlock(&hba->lock);
}

void ahci_eject_cdrom(struct ahci *hba)
{
	if (hba && hba->port[1].cdrom)
		atapi_eject(hba->port[1].cdrom);
}

int ahci_insert_cdrom(struct ahci *hba, const char *path, char *err,
		      size_t errlen)
{
	if (!hba || !hba->port[1].cdrom) {
		snprintf(err, errlen, "this machine has no CD-ROM drive");
		return -ENODEV;
	}
	return atapi_insert(hba->port[1].cdrom, path, err, errlen);
}

char *ahci_cdrom_medium(struct ahci *hba)
{
	return hba && hba->port[1].cdrom ? atapi_medium(hba->port[1].cdrom)
					 : NULL;
}

bool ahci_has_cdrom(struct ahci *hba)
{
	return hba && hba->port[1].cdrom;
}

void ahci_disk_counters(struct ahci *hba, unsigned i, uint64_t *read,
			uint64_t *written)
{
	struct ata_disk *disk = hba && i < AHCI_MAX_DISKS
					? hba->port[ahci_disk_port(i)].disk
					: NULL;

	*read = *written = 0;
	if (disk)
		ata_disk_counters(disk, read, written);
}

/* ---- the machine's services -------------------------------------------*/

static void *ahci_vmm_gpa_to_hva(void *ctx, uint64_t gpa, uint64_t len)
{
	return vmm_gpa_to_hva(ctx, gpa, len);
}

static int ahci_vmm_register_pci(void *ctx, struct pci_device *dev,
				 unsigned slot)
{
	return pci_register_device(ctx, dev, slot);
}

static void ahci_vmm_set_intx(void *ctx, struct pci_device *dev, bool level)
{
	(void)ctx;
	pci_set_intx(dev, level);
}

static bool ahci_vmm_msi_notify(void *ctx, struct pci_device *dev,
				unsigned cap_off)
{
	(void)ctx;
	return pci_msi_notify(dev, cap_off);
}

static void ahci_vmm_on_reset(void *ctx, void (*fn)(void *opaque), void *opaque)
{
	vmm_on_reset(ctx, fn, opaque);
}

static const struct ahci_host_ops ahci_vmm_ops = {
	.gpa_to_hva = ahci_vmm_gpa_to_hva,
	.register_pci = ahci_vmm_register_pci,
	.set_intx = ahci_vmm_set_intx,
	.msi_notify = ahci_vmm_msi_notify,
	.on_reset = ahci_vmm_on_reset,
};

struct ahci *ahci_create(struct vmm *vm, unsigned devfn,
			 const struct ahci_config *cfg, char *err,
			 size_t errlen)
{
	return ahci_create_with_ops(&ahci_vmm_ops, vm, devfn, cfg, err, errlen);
}
