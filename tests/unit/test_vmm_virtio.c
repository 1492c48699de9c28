/* SPDX-License-Identifier: MIT */
/*
 * virtio: the split virtqueue, the PCI transport (modern and legacy
 * interfaces, MSI-X and INTx) and virtio-net, driven over fake guest
 * memory as a guest driver would drive them; hostile descriptor chains
 * must leave the device broken (DEVICE_NEEDS_RESET), never the host.
 * The last tests run the real libslirp backend (no guest, no traffic
 * beyond loopback).
 */
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <criterion/criterion.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "vmm_test_util.h"

#include "vmm/devices/virtio_net.h"
#include "vmm/devices/virtio_pci.h"
#include "vmm/net/net.h"

#define SLOT 4
#define DEVFN (SLOT << 3)
#define MODERN 0xe0000000ull
#define MSIX 0xe0004000ull
#define LEGACY 0xc000
#define COMMON(off) (MODERN + (off))
#define NOTIFY(q) (MODERN + VIRTIO_PCI_NOTIFY_OFFSET + 4 * (q))
#define DEVCFG(off) (MODERN + VIRTIO_PCI_DEVICE_OFFSET + (off))
#define QSIZE 256
#define BUF_BASE 0x100000ull

#define F_MAC (1ull << 5)
#define F_MRG_RXBUF (1ull << 15)
#define F_STATUS (1ull << 16)
#define F_INDIRECT (1ull << 28)
#define F_EVENT_IDX (1ull << 29)
#define F_VERSION_1 (1ull << 32)

struct fake_backend {
	struct net_backend be;
	unsigned count;
	size_t len[16];
	uint8_t frame[16][2048];
};

struct drv_queue {
	uint64_t desc, avail, used;
	uint16_t next_desc;
	uint16_t avail_idx;
};

static struct vmm *vm;
static struct virtio_net *net;
static struct virtio_pci *vp;
static struct fake_backend fake;
static struct drv_queue dq[2];
static const uint8_t mac[6] = { 0x52, 0x54, 0x00, 0xab, 0xcd, 0xef };

static void fake_send(struct net_backend *be, const void *frame, size_t len)
{
	struct fake_backend *fb = (struct fake_backend *)be;

	if (fb->count < 16 && len <= 2048) {
		memcpy(fb->frame[fb->count], frame, len);
		fb->len[fb->count++] = len;
	}
}

static void fake_close(struct net_backend *be)
{
	(void)be;
}

static const struct net_backend_ops fake_ops = { .send = fake_send,
						 .close = fake_close };

/* ---- guest memory and registers -------------------------------------------*/

static uint8_t *g(uint64_t gpa)
{
	uint8_t *p = vmm_gpa_to_hva(vm, gpa, 1);

	cr_assert_not_null(p);
	return p;
}

static void mw(uint64_t addr, uint64_t v, unsigned size)
{
	uint8_t data[8];

	memcpy(data, &v, 8);
	vmm_io_bus_access(&vm->mmio, addr, data, size, true);
}

static uint64_t mr(uint64_t addr, unsigned size)
{
	uint64_t v = 0;

	vmm_io_bus_access(&vm->mmio, addr, &v, size, false);
	return v;
}

static void put16(uint64_t gpa, uint16_t v)
{
	memcpy(g(gpa), &v, 2);
}

static uint16_t get16(uint64_t gpa)
{
	uint16_t v;

	memcpy(&v, g(gpa), 2);
	return v;
}

static uint32_t get32(uint64_t gpa)
{
	uint32_t v;

	memcpy(&v, g(gpa), 4);
	return v;
}

static void put_desc(uint64_t table, unsigned i, uint64_t addr, uint32_t len,
		     uint16_t flags, uint16_t next)
{
	uint8_t *d = g(table + 16 * i);

	memcpy(d, &addr, 8);
	memcpy(d + 8, &len, 4);
	memcpy(d + 12, &flags, 2);
	memcpy(d + 14, &next, 2);
}

static void publish(struct drv_queue *q, uint16_t head)
{
	put16(q->avail + 4 + 2 * (q->avail_idx % QSIZE), head);
	q->avail_idx++;
	put16(q->avail + 2, q->avail_idx);
}

/* One chain of n buffers, the writable ones after the readable ones. */
static uint16_t add_chain(struct drv_queue *q, const uint64_t *addr,
			  const uint32_t *len, const bool *writable, unsigned n)
{
	uint16_t head = q->next_desc;

	for (unsigned i = 0; i < n; i++) {
		uint16_t at = (head + i) % QSIZE;

		put_desc(q->desc, at, addr[i], len[i],
			 (writable[i] ? VIRTQ_DESC_F_WRITE : 0) |
				 (i + 1 < n ? VIRTQ_DESC_F_NEXT : 0),
			 (at + 1) % QSIZE);
	}
	q->next_desc = (head + n) % QSIZE;
	publish(q, head);
	return head;
}

static uint16_t used_idx(struct drv_queue *q)
{
	return get16(q->used + 2);
}

static uint8_t status(void)
{
	return mr(COMMON(0x14), 1);
}

static void enable_bars(void)
{
	pci_write32(vm, DEVFN, 0x10, LEGACY);
	pci_write32(vm, DEVFN, 0x14, (uint32_t)MSIX);
	pci_write32(vm, DEVFN, 0x20, (uint32_t)MODERN);
	pci_write32(vm, DEVFN, 0x24, 0);
	pci_write32(vm, DEVFN, 0x04, 0x7); /* I/O, memory, bus master */
}

static bool modern_init(uint64_t features)
{
	mw(COMMON(0x14), 0, 1);
	mw(COMMON(0x14), VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER, 1);
	mw(COMMON(0x08), 0, 4);
	mw(COMMON(0x0c), (uint32_t)features, 4);
	mw(COMMON(0x08), 1, 4);
	mw(COMMON(0x0c), features >> 32, 4);
	mw(COMMON(0x14), 0x0b, 1);
	if (!(status() & VIRTIO_STATUS_FEATURES_OK))
		return false;
	for (unsigned q = 0; q < 2; q++) {
		dq[q] = (struct drv_queue){ .desc = 0x10000 + q * 0x10000,
					    .avail = 0x14000 + q * 0x10000,
					    .used = 0x18000 + q * 0x10000 };
		memset(g(dq[q].desc), 0, 0xc000);
		mw(COMMON(0x16), q, 2);
		cr_assert_eq(mr(COMMON(0x18), 2), QSIZE);
		mw(COMMON(0x20), dq[q].desc, 4);
		mw(COMMON(0x24), 0, 4);
		mw(COMMON(0x28), dq[q].avail, 4);
		mw(COMMON(0x2c), 0, 4);
		mw(COMMON(0x30), dq[q].used, 4);
		mw(COMMON(0x34), 0, 4);
		mw(COMMON(0x1c), 1, 2);
	}
	mw(COMMON(0x14), 0x0f, 1);
	return true;
}

static void setup(void)
{
	char err[256] = "";

	vm = vmm_create_test(16u << 20);
	cr_assert_not_null(vm);
	memset(&fake, 0, sizeof(fake));
	fake.be.ops = &fake_ops;
	net = virtio_net_create(vm, SLOT, mac, false, &fake.be, err,
				sizeof(err));
	cr_assert_not_null(net, "%s", err);
	vp = virtio_net_transport(net);
	enable_bars();
}

static void teardown(void)
{
	virtio_net_destroy(net);
	vmm_destroy(vm);
}

TestSuite(virtio, .init = setup, .fini = teardown, .timeout = 30);

static void inject(const void *frame, size_t len)
{
	fake.be.receive(fake.be.receive_opaque, frame, len);
}

static void make_frame(uint8_t *f, size_t len, uint8_t seed)
{
	memset(f, 0xff, 6);
	memcpy(f + 6, mac, 6);
	f[12] = 0x08;
	f[13] = 0x00;
	for (size_t i = 14; i < len; i++)
		f[i] = (uint8_t)(seed + i * 7);
}

/* ---- PCI identity and capabilities ------------------------------------------*/

Test(virtio, pci_identity_and_capabilities)
{
	uint8_t *c = virtio_pci_device(vp)->config;
	unsigned types = 0, cap;

	cr_assert_eq(pci_read32(vm, DEVFN, 0), 0x10001af4);
	cr_assert_eq(pci_read32(vm, DEVFN, 0x08) >> 8, 0x020000);
	cr_assert_eq(pci_read32(vm, DEVFN, 0x2c), 0x00011af4);
	cr_assert_eq(c[0x3d], 1);
	cap = c[0x34];
	cr_assert_eq(c[cap], 0x11, "MSI-X first");
	cr_assert_eq((c[cap + 2] | c[cap + 3] << 8) & 0x7ff, 2, "3 vectors");
	for (cap = c[cap + 1]; cap; cap = c[cap + 1]) {
		cr_assert_eq(c[cap], 0x09);
		if (c[cap + 3] != 5)
			cr_assert_eq(c[cap + 4], VIRTIO_PCI_MODERN_BAR);
		types |= 1u << c[cap + 3];
	}
	cr_assert_eq(types, 0x3e,
		     "common, notify, ISR, device and PCI config access caps");
	/* the capability bodies are read-only */
	pci_write32(vm, DEVFN, 0x58, 0x12345678);
	cr_assert_eq(pci_read32(vm, DEVFN, 0x58), VIRTIO_PCI_COMMON_OFFSET);
	/* config: the MAC and link up */
	for (int i = 0; i < 6; i++)
		cr_assert_eq(mr(DEVCFG(i), 1), mac[i]);
	cr_assert_eq(mr(DEVCFG(6), 2), 1);
	cr_assert_eq(mr(COMMON(0x12), 2), 2, "two queues");
}

/* The PCI configuration access window reaches the modern BAR. */
Test(virtio, pci_config_access_window)
{
	uint8_t *c = virtio_pci_device(vp)->config;
	unsigned cap;

	for (cap = c[0x34]; cap && !(c[cap] == 0x09 && c[cap + 3] == 5);
	     cap = c[cap + 1])
		;
	cr_assert_neq(cap, 0, "no VIRTIO_PCI_CAP_PCI_CFG");
	cr_assert_eq(c[cap + 2], 20);
	/* read num_queues (common config 0x12) through the window */
	pci_write8(vm, DEVFN, cap + 4, VIRTIO_PCI_MODERN_BAR);
	pci_write32(vm, DEVFN, cap + 12, 2);
	pci_write32(vm, DEVFN, cap + 8, 0x12);
	cr_assert_eq(pci_read32(vm, DEVFN, cap + 16) & 0xffff, 2);
	/* write the status through it */
	pci_write32(vm, DEVFN, cap + 12, 1);
	pci_write32(vm, DEVFN, cap + 8, 0x14);
	pci_write32(vm, DEVFN, cap + 16, VIRTIO_STATUS_ACKNOWLEDGE);
	cr_assert_eq(status(), VIRTIO_STATUS_ACKNOWLEDGE);
	/* the capability header stays read-only, the window does not */
	pci_write32(vm, DEVFN, cap, 0xffffffff);
	cr_assert_eq(c[cap + 2], 20);
	cr_assert_eq(c[cap + 3], 5);
	/* a misaligned or oversized window does nothing */
	pci_write32(vm, DEVFN, cap + 12, 4);
	pci_write32(vm, DEVFN, cap + 8, 0x3fff);
	pci_write32(vm, DEVFN, cap + 16, 0);
	cr_assert_eq(status(), VIRTIO_STATUS_ACKNOWLEDGE);
}

Test(virtio, feature_negotiation)
{
	uint64_t offered = mr(COMMON(0x04), 4);

	mw(COMMON(0x00), 1, 4);
	offered |= mr(COMMON(0x04), 4) << 32;
	cr_assert(offered & F_VERSION_1);
	cr_assert(offered & F_MAC);
	cr_assert(offered & F_INDIRECT);
	cr_assert(offered & F_EVENT_IDX);
	/* a feature never offered: FEATURES_OK does not stick */
	cr_assert_not(modern_init(F_VERSION_1 | (1ull << 40)));
	/* a modern driver without VERSION_1 is refused too */
	cr_assert_not(modern_init(F_MAC));
	cr_assert(modern_init(F_VERSION_1 | F_MAC));
	cr_assert_eq(status(), 0x0f);
	mw(COMMON(0x14), 0, 1);
	cr_assert_eq(status(), 0, "reset");
}

/* ---- transmit and receive ---------------------------------------------------*/

Test(virtio, transmit_strips_header_and_interrupts)
{
	uint8_t frame[100];
	uint64_t addr[2] = { BUF_BASE, BUF_BASE + 0x1000 };
	uint32_t len[2] = { 12, sizeof(frame) };
	bool wr[2] = { false, false };

	cr_assert(modern_init(F_VERSION_1 | F_MAC));
	make_frame(frame, sizeof(frame), 3);
	memset(g(BUF_BASE), 0, 12);
	memcpy(g(BUF_BASE + 0x1000), frame, sizeof(frame));
	add_chain(&dq[1], addr, len, wr, 2);
	mw(NOTIFY(1), 1, 2);
	cr_assert_eq(fake.count, 1);
	cr_assert_eq(fake.len[0], sizeof(frame));
	cr_assert_arr_eq(fake.frame[0], frame, sizeof(frame));
	cr_assert_eq(used_idx(&dq[1]), 1);
	cr_assert_eq(get32(dq[1].used + 4), 0, "head 0");
	/* no MSI-X: INTx and ISR bit 0; reading the ISR lowers the line */
	cr_assert(vm->gsi_level[virtio_pci_device(vp)->gsi]);
	cr_assert_eq(mr(MODERN + VIRTIO_PCI_ISR_OFFSET, 1), 1);
	cr_assert_not(vm->gsi_level[virtio_pci_device(vp)->gsi]);
	cr_assert_eq(mr(MODERN + VIRTIO_PCI_ISR_OFFSET, 1), 0);
}

Test(virtio, receive_into_posted_buffer)
{
	uint8_t frame[300];
	uint64_t addr = BUF_BASE;
	uint32_t len = 2048;
	bool wr = true;

	cr_assert(modern_init(F_VERSION_1 | F_MAC));
	add_chain(&dq[0], &addr, &len, &wr, 1);
	make_frame(frame, sizeof(frame), 9);
	inject(frame, sizeof(frame));
	cr_assert_eq(used_idx(&dq[0]), 1);
	cr_assert_eq(get32(dq[0].used + 8), 12 + sizeof(frame));
	cr_assert_eq(get16(BUF_BASE + 10), 1, "num_buffers");
	cr_assert_arr_eq(g(BUF_BASE + 12), frame, sizeof(frame));
}

Test(virtio, receive_waits_for_buffers)
{
	uint8_t frame[64];
	uint64_t addr = BUF_BASE;
	uint32_t len = 1600;
	bool wr = true;

	cr_assert(modern_init(F_VERSION_1));
	make_frame(frame, sizeof(frame), 1);
	inject(frame, sizeof(frame));
	cr_assert_eq(used_idx(&dq[0]), 0);
	add_chain(&dq[0], &addr, &len, &wr, 1);
	mw(NOTIFY(0), 0, 2);
	cr_assert_eq(used_idx(&dq[0]), 1, "held frame delivered on the kick");
	cr_assert_arr_eq(g(BUF_BASE + 12), frame, sizeof(frame));
	cr_assert_eq(virtio_net_rx_dropped(net), 0);
}

Test(virtio, mergeable_receive_buffers)
{
	uint8_t frame[1400];

	cr_assert(modern_init(F_VERSION_1 | F_MRG_RXBUF));
	for (unsigned i = 0; i < 4; i++) {
		uint64_t addr = BUF_BASE + i * 0x1000;
		uint32_t len = 512;
		bool wr = true;

		add_chain(&dq[0], &addr, &len, &wr, 1);
	}
	make_frame(frame, sizeof(frame), 5);
	inject(frame, sizeof(frame));
	cr_assert_eq(used_idx(&dq[0]), 3, "12 + 1400 bytes take 3 buffers");
	cr_assert_eq(get16(BUF_BASE + 10), 3, "num_buffers");
	cr_assert_eq(get32(dq[0].used + 8), 512);
	cr_assert_eq(get32(dq[0].used + 24), 12 + 1400 - 1024);
	cr_assert_arr_eq(g(BUF_BASE + 12), frame, 500);
	cr_assert_arr_eq(g(BUF_BASE + 0x1000), frame + 500, 512);
	cr_assert_arr_eq(g(BUF_BASE + 0x2000), frame + 1012, 388);
}

Test(virtio, indirect_transmit)
{
	uint8_t frame[80];
	uint64_t table = BUF_BASE + 0x8000;

	cr_assert(modern_init(F_VERSION_1 | F_INDIRECT));
	make_frame(frame, sizeof(frame), 11);
	memset(g(BUF_BASE), 0, 12);
	memcpy(g(BUF_BASE + 0x100), frame, 40);
	memcpy(g(BUF_BASE + 0x200), frame + 40, 40);
	put_desc(table, 0, BUF_BASE, 12, VIRTQ_DESC_F_NEXT, 1);
	put_desc(table, 1, BUF_BASE + 0x100, 40, VIRTQ_DESC_F_NEXT, 2);
	put_desc(table, 2, BUF_BASE + 0x200, 40, 0, 0);
	put_desc(dq[1].desc, 0, table, 48, VIRTQ_DESC_F_INDIRECT, 0);
	publish(&dq[1], 0);
	mw(NOTIFY(1), 1, 2);
	cr_assert_eq(fake.count, 1);
	cr_assert_arr_eq(fake.frame[0], frame, sizeof(frame));
}

Test(virtio, event_index_suppresses_interrupts)
{
	uint8_t frame[60];
	uint64_t addr = BUF_BASE;
	uint32_t len = 12 + sizeof(frame);
	bool wr = false;
	unsigned gsi = virtio_pci_device(vp)->gsi;

	cr_assert(modern_init(F_VERSION_1 | F_EVENT_IDX));
	memset(g(BUF_BASE), 0, 12);
	make_frame(g(BUF_BASE + 12), sizeof(frame), 2);
	/* used_event = 5: no interrupt until the 6th used buffer */
	put16(dq[1].avail + 4 + 2 * QSIZE, 5);
	for (unsigned i = 0; i < 6; i++) {
		add_chain(&dq[1], &addr, &len, &wr, 1);
		mw(NOTIFY(1), 1, 2);
		if (i == 0) {
			/* the first interrupt is always sent */
			cr_assert(vm->gsi_level[gsi]);
			mr(MODERN + VIRTIO_PCI_ISR_OFFSET, 1);
		} else if (i < 5) {
			cr_assert_not(vm->gsi_level[gsi], "buffer %u", i);
		}
	}
	cr_assert(vm->gsi_level[gsi], "used_event reached");
	cr_assert_eq(fake.count, 6);
	/* the device publishes avail_event for the driver */
	cr_assert_eq(get16(dq[1].used + 4 + 8 * QSIZE), 6);
}

/* ---- MSI-X --------------------------------------------------------------*/

Test(virtio, msix_vectors_mask_and_pending)
{
	uint8_t frame[60];
	uint64_t addr = BUF_BASE;
	uint32_t len = 12 + sizeof(frame);
	bool wr = false;
	unsigned cap = virtio_pci_device(vp)->config[0x34];

	memset(g(BUF_BASE), 0, 12);
	make_frame(g(BUF_BASE + 12), sizeof(frame), 2);
	/* enable MSI-X, vector 2 for the transmit queue */
	pci_write32(vm, DEVFN, cap, pci_read32(vm, DEVFN, cap) | 0x80000000u);
	mw(MSIX + 2 * 16, 0xfee01000, 4);
	mw(MSIX + 2 * 16 + 4, 0, 4);
	mw(MSIX + 2 * 16 + 8, 0x4041, 4);
	mw(MSIX + 2 * 16 + 12, 1, 4); /* masked */
	cr_assert(modern_init(F_VERSION_1));
	mw(COMMON(0x16), 1, 2);
	mw(COMMON(0x1a), 2, 2);
	cr_assert_eq(mr(COMMON(0x1a), 2), 2);
	add_chain(&dq[1], &addr, &len, &wr, 1);
	mw(NOTIFY(1), 1, 2);
	cr_assert_eq(vm->msi_count, 0, "masked");
	cr_assert_eq(mr(MSIX + VIRTIO_PCI_MSIX_PBA_OFFSET, 4), 4, "pending");
	cr_assert_not(vm->gsi_level[virtio_pci_device(vp)->gsi]);
	mw(MSIX + 2 * 16 + 12, 0, 4);
	cr_assert_eq(vm->msi_count, 1, "delivered on unmask");
	cr_assert_eq(vm->last_msi_address, 0xfee01000);
	cr_assert_eq(vm->last_msi_data, 0x4041);
	cr_assert_eq(mr(MSIX + VIRTIO_PCI_MSIX_PBA_OFFSET, 4), 0);
	add_chain(&dq[1], &addr, &len, &wr, 1);
	mw(NOTIFY(1), 1, 2);
	cr_assert_eq(vm->msi_count, 2);
	/* out-of-range vectors read back as NO_VECTOR */
	mw(COMMON(0x1a), 7, 2);
	cr_assert_eq(mr(COMMON(0x1a), 2), VIRTIO_MSI_NO_VECTOR);
}

Test(virtio, link_status_change_interrupts)
{
	uint8_t gen;

	cr_assert(modern_init(F_VERSION_1 | F_STATUS));
	gen = mr(COMMON(0x15), 1);
	virtio_net_set_link(net, false);
	cr_assert_eq(mr(DEVCFG(6), 2), 0);
	cr_assert_neq(mr(COMMON(0x15), 1), gen, "config generation moved");
	cr_assert_eq(mr(MODERN + VIRTIO_PCI_ISR_OFFSET, 1), 2, "config ISR");
}

/* ---- the legacy interface --------------------------------------------------*/

Test(virtio, legacy_driver)
{
	uint8_t frame[90];
	uint64_t rx_ring = 0x40000, tx_ring = 0x50000;
	uint64_t tx_avail = tx_ring + 16 * QSIZE;
	uint64_t tx_used = (tx_avail + 6 + 2 * QSIZE + 4095) & ~4095ull;
	uint64_t rx_avail = rx_ring + 16 * QSIZE;
	uint64_t rx_used = (rx_avail + 6 + 2 * QSIZE + 4095) & ~4095ull;

	cr_assert_eq(pio_read(vm, LEGACY + 0x00, 4) & (1u << 5), 1u << 5);
	pio_write(vm, LEGACY + 0x12, 3, 1);
	pio_write(vm, LEGACY + 0x04, 1u << 5, 4); /* MAC only */
	cr_assert_eq(pio_read(vm, LEGACY + 0x0c, 2), QSIZE);
	pio_write(vm, LEGACY + 0x0e, 0, 2);
	pio_write(vm, LEGACY + 0x08, rx_ring >> 12, 4);
	pio_write(vm, LEGACY + 0x0e, 1, 2);
	pio_write(vm, LEGACY + 0x08, tx_ring >> 12, 4);
	cr_assert_eq(pio_read(vm, LEGACY + 0x08, 4), tx_ring >> 12);
	pio_write(vm, LEGACY + 0x12, 7, 1);
	/* config after the 20-byte header without MSI-X */
	for (int i = 0; i < 6; i++)
		cr_assert_eq(pio_read(vm, LEGACY + 0x14 + i, 1), mac[i]);

	/* transmit: 10-byte header in its own buffer */
	make_frame(frame, sizeof(frame), 4);
	memset(g(BUF_BASE), 0, 10);
	memcpy(g(BUF_BASE + 0x100), frame, sizeof(frame));
	put_desc(tx_ring, 0, BUF_BASE, 10, VIRTQ_DESC_F_NEXT, 1);
	put_desc(tx_ring, 1, BUF_BASE + 0x100, sizeof(frame), 0, 0);
	put16(tx_avail + 4, 0);
	put16(tx_avail + 2, 1);
	pio_write(vm, LEGACY + 0x10, 1, 2);
	cr_assert_eq(fake.count, 1);
	cr_assert_arr_eq(fake.frame[0], frame, sizeof(frame));
	cr_assert_eq(get16(tx_used + 2), 1);

	/* receive: 10-byte header, then the frame */
	put_desc(rx_ring, 0, BUF_BASE + 0x2000, 1600, VIRTQ_DESC_F_WRITE, 0);
	put16(rx_avail + 4, 0);
	put16(rx_avail + 2, 1);
	inject(frame, sizeof(frame));
	cr_assert_eq(get16(rx_used + 2), 1);
	cr_assert_eq(get32(rx_used + 8), 10 + sizeof(frame));
	cr_assert_arr_eq(g(BUF_BASE + 0x2000 + 10), frame, sizeof(frame));
	/* ISR by the legacy register: read clears */
	cr_assert_eq(pio_read(vm, LEGACY + 0x13, 1), 1);
	cr_assert_eq(pio_read(vm, LEGACY + 0x13, 1), 0);
	/* with MSI-X on, the vector registers come in and the config moves
	 * to 0x18 */
	{
		unsigned cap = virtio_pci_device(vp)->config[0x34];

		pci_write32(vm, DEVFN, cap,
			    pci_read32(vm, DEVFN, cap) | 0x80000000u);
		pio_write(vm, LEGACY + 0x16, 1, 2); /* queue 1 -> vector 1 */
		cr_assert_eq(pio_read(vm, LEGACY + 0x16, 2), 1);
		pio_write(vm, LEGACY + 0x14, 0, 2);
		cr_assert_eq(pio_read(vm, LEGACY + 0x14, 2), 0);
		for (int i = 0; i < 6; i++)
			cr_assert_eq(pio_read(vm, LEGACY + 0x18 + i, 1),
				     mac[i]);
	}
}

/* ---- hostile chains ----------------------------------------------------------*/

static void expect_broken(const char *what)
{
	cr_assert(status() & VIRTIO_STATUS_NEEDS_RESET, "%s: not broken", what);
	cr_assert_neq(virtio_pci_broken_reason(vp)[0], 0);
	cr_assert_eq(fake.count, 0, "%s: nothing sent", what);
}

static void hostile_tx(uint64_t features, void (*build)(struct drv_queue *q),
		       const char *what)
{
	cr_assert(modern_init(F_VERSION_1 | features));
	build(&dq[1]);
	mw(NOTIFY(1), 1, 2);
	expect_broken(what);
	/* broken stays broken: further kicks do nothing */
	mw(NOTIFY(1), 1, 2);
	cr_assert_eq(fake.count, 0);
	/* a reset brings it back */
	cr_assert(modern_init(F_VERSION_1 | features));
	cr_assert_not(status() & VIRTIO_STATUS_NEEDS_RESET);
}

static void build_out_of_range(struct drv_queue *q)
{
	put_desc(q->desc, 0, 15u << 20, 2u << 20, 0, 0);
	publish(q, 0);
}

static void build_past_4g(struct drv_queue *q)
{
	put_desc(q->desc, 0, 0xfffffffffffff000ull, 0x2000, 0, 0);
	publish(q, 0);
}

static void build_loop(struct drv_queue *q)
{
	put_desc(q->desc, 0, BUF_BASE, 64, VIRTQ_DESC_F_NEXT, 1);
	put_desc(q->desc, 1, BUF_BASE, 64, VIRTQ_DESC_F_NEXT, 0);
	publish(q, 0);
}

static void build_zero_length(struct drv_queue *q)
{
	put_desc(q->desc, 0, BUF_BASE, 0, 0, 0);
	publish(q, 0);
}

static void build_next_past_queue(struct drv_queue *q)
{
	put_desc(q->desc, 0, BUF_BASE, 64, VIRTQ_DESC_F_NEXT, 300);
	publish(q, 0);
}

static void build_head_past_queue(struct drv_queue *q)
{
	put16(q->avail + 4, 999);
	put16(q->avail + 2, 1);
}

static void build_avail_jump(struct drv_queue *q)
{
	put_desc(q->desc, 0, BUF_BASE, 64, 0, 0);
	put16(q->avail + 2, 1000);
}

static void build_nested_indirect(struct drv_queue *q)
{
	uint64_t table = BUF_BASE + 0x8000;

	put_desc(table, 0, table, 16, VIRTQ_DESC_F_INDIRECT, 0);
	put_desc(q->desc, 0, table, 16, VIRTQ_DESC_F_INDIRECT, 0);
	publish(q, 0);
}

static void build_indirect_loop(struct drv_queue *q)
{
	uint64_t table = BUF_BASE + 0x8000;

	put_desc(table, 0, BUF_BASE, 64, VIRTQ_DESC_F_NEXT, 1);
	put_desc(table, 1, BUF_BASE, 64, VIRTQ_DESC_F_NEXT, 0);
	put_desc(q->desc, 0, table, 32, VIRTQ_DESC_F_INDIRECT, 0);
	publish(q, 0);
}

static void build_indirect_bad_size(struct drv_queue *q)
{
	put_desc(q->desc, 0, BUF_BASE + 0x8000, 17, VIRTQ_DESC_F_INDIRECT, 0);
	publish(q, 0);
}

static void build_writable_tx(struct drv_queue *q)
{
	put_desc(q->desc, 0, BUF_BASE, 100, VIRTQ_DESC_F_WRITE, 0);
	publish(q, 0);
}

static void build_read_after_write(struct drv_queue *q)
{
	put_desc(q->desc, 0, BUF_BASE, 100, VIRTQ_DESC_F_WRITE | 1, 1);
	put_desc(q->desc, 1, BUF_BASE, 100, 0, 0);
	publish(q, 0);
}

Test(virtio, hostile_out_of_range)
{
	hostile_tx(0, build_out_of_range, "past RAM");
}
Test(virtio, hostile_wrapping_address)
{
	hostile_tx(0, build_past_4g, "wrapping address");
}
Test(virtio, hostile_loop)
{
	hostile_tx(0, build_loop, "loop");
}
Test(virtio, hostile_zero_length)
{
	hostile_tx(0, build_zero_length, "zero length");
}
Test(virtio, hostile_next_past_queue)
{
	hostile_tx(0, build_next_past_queue, "next past queue");
}
Test(virtio, hostile_head_past_queue)
{
	hostile_tx(0, build_head_past_queue, "head past queue");
}
Test(virtio, hostile_avail_index_jump)
{
	hostile_tx(0, build_avail_jump, "avail jump");
}
Test(virtio, hostile_nested_indirect)
{
	hostile_tx(F_INDIRECT, build_nested_indirect, "nested indirect");
}
Test(virtio, hostile_indirect_loop)
{
	hostile_tx(F_INDIRECT, build_indirect_loop, "indirect loop");
}
Test(virtio, hostile_indirect_size)
{
	hostile_tx(F_INDIRECT, build_indirect_bad_size, "indirect size");
}
Test(virtio, hostile_indirect_not_negotiated)
{
	hostile_tx(0, build_indirect_loop, "indirect not negotiated");
}
Test(virtio, hostile_writable_transmit)
{
	hostile_tx(0, build_writable_tx, "writable tx");
}
Test(virtio, hostile_readable_after_writable)
{
	hostile_tx(0, build_read_after_write, "read after write");
}

Test(virtio, hostile_rings_outside_memory)
{
	cr_assert(modern_init(F_VERSION_1));
	/* queue registers cannot move while enabled; reset and move them */
	mw(COMMON(0x14), 0, 1);
	mw(COMMON(0x14), 3, 1);
	mw(COMMON(0x0c), 0, 4);
	mw(COMMON(0x08), 1, 4);
	mw(COMMON(0x0c), 1, 4);
	mw(COMMON(0x14), 0x0b, 1);
	mw(COMMON(0x16), 1, 2);
	mw(COMMON(0x20), 0xfff00000u, 4);
	mw(COMMON(0x28), 0xfff10000u, 4);
	mw(COMMON(0x30), 0xfff20000u, 4);
	mw(COMMON(0x1c), 1, 2);
	mw(COMMON(0x14), 0x0f, 1);
	mw(NOTIFY(1), 1, 2);
	expect_broken("rings outside memory");
}

Test(virtio, hostile_receive_buffer_readable)
{
	uint8_t frame[64];

	cr_assert(modern_init(F_VERSION_1));
	put_desc(dq[0].desc, 0, BUF_BASE, 2048, 0, 0);
	publish(&dq[0], 0);
	make_frame(frame, sizeof(frame), 1);
	inject(frame, sizeof(frame));
	expect_broken("readable receive buffer");
}

Test(virtio, hostile_register_writes)
{
	/* random offsets and sizes over every BAR must not crash */
	unsigned seed = 1;

	cr_assert(modern_init(F_VERSION_1));
	for (unsigned i = 0; i < 20000; i++) {
		unsigned sizes[4] = { 1, 2, 4, 8 };
		uint64_t off, v;
		unsigned size;

		seed = seed * 1103515245 + 12345;
		off = (seed >> 8) % 0x4000;
		size = sizes[seed & 3];
		v = (uint64_t)seed * 2654435761u;
		if (off == 0x14 || (off >= 0x1000 && off < 0x2000))
			continue; /* status and ISR: tested elsewhere */
		mw(MODERN + off, v, size);
		mw(MSIX + (off & 0xfff), v, size);
		pio_write(vm, LEGACY + (off & 0x3f), (uint32_t)v,
			  size > 4 ? 4 : size);
	}
	cr_assert(true);
}

/* ---- the --net option -----------------------------------------------------*/

Test(net_config, parses_user_options)
{
	struct net_config cfg;
	char err[256];

	cr_assert_eq(net_config_parse(&cfg,
				      "user,restrict=on,mac=02:00:00:00:00:07,"
				      "hostfwd=tcp:127.0.0.1:2222-:22,"
				      "hostfwd=udp::5353-10.0.2.15:53,"
				      "guestfwd=tcp:10.0.2.100:80-cmd:cat,"
				      "guestfwd=tcp:10.0.2.101:81-unix:/tmp/s,"
				      "tftp=/srv,bootfile=pxelinux.0",
				      err, sizeof(err)),
		     0, "%s", err);
	cr_assert_eq(cfg.kind, NET_USER);
	cr_assert(cfg.restricted);
	cr_assert_eq(cfg.mac[5], 7);
	cr_assert_eq(cfg.hostfwd_count, 2);
	cr_assert_eq(cfg.hostfwd[0].host_port, 2222);
	cr_assert_eq(cfg.hostfwd[0].guest_port, 22);
	cr_assert_eq(cfg.hostfwd[0].host_addr.s_addr, htonl(0x7f000001));
	cr_assert(cfg.hostfwd[1].udp);
	cr_assert_eq(cfg.hostfwd[1].guest_addr.s_addr, htonl(0x0a00020f));
	cr_assert_eq(cfg.guestfwd_count, 2);
	cr_assert_str_eq(cfg.guestfwd[0].command, "cat");
	cr_assert_str_eq(cfg.guestfwd[1].unix_path, "/tmp/s");
	cr_assert_eq(cfg.guestfwd[1].port, 81);
	cr_assert_str_eq(cfg.tftp_dir, "/srv");
	cr_assert_str_eq(cfg.bootfile, "pxelinux.0");
	net_config_free(&cfg);

	cr_assert_eq(
		net_config_parse(&cfg, "tap,ifname=tap0", err, sizeof(err)), 0);
	cr_assert_str_eq(cfg.ifname, "tap0");
	net_config_free(&cfg);
}

Test(net_config, rejects_bad_options)
{
	static const char *bad[] = {
		"",
		"bridge",
		"user,mac=01:00:00:00:00:01", /* multicast */
		"user,mac=zz",
		"user,hostfwd=tcp:127.0.0.1:70000-:22",
		"user,hostfwd=tcp:127.0.0.1:22",
		"user,guestfwd=tcp:10.0.2.100:80-exec:x",
		"user,guestfwd=tcp::80-cmd:x",
		"user,guestfwd=tcp:10.0.3.1:80-cmd:x", /* outside slirp */
		"user,restrict=maybe",
		"user,ifname=tap0",
		"tap",
		"tap,ifname=tap0,restrict=on",
		"user,bogus=1",
		"user,restrict",
	};
	struct net_config cfg;
	char err[256];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = 0;
		cr_assert_neq(net_config_parse(&cfg, bad[i], err, sizeof(err)),
			      0, "accepted '%s'", bad[i]);
		cr_assert_neq(err[0], 0, "no message for '%s'", bad[i]);
	}
}

/* ---- the libslirp backend, without a guest ------------------------------*/

static pthread_mutex_t seen_lock = PTHREAD_MUTEX_INITIALIZER;
static uint8_t seen[8][2048];
static size_t seen_len[8];
static unsigned seen_count;

static void record_frame(void *opaque, const void *frame, size_t len)
{
	(void)opaque;
	pthread_mutex_lock(&seen_lock);
	if (seen_count < 8 && len <= 2048) {
		memcpy(seen[seen_count], frame, len);
		seen_len[seen_count++] = len;
	}
	pthread_mutex_unlock(&seen_lock);
}

/* Waits up to 5 s for a frame of ethertype type (and, for IPv4, protocol
 * proto); returns its index or -1. */
static int wait_frame(uint16_t type, int proto)
{
	for (int tries = 0; tries < 500; tries++) {
		pthread_mutex_lock(&seen_lock);
		for (unsigned i = 0; i < seen_count; i++) {
			if ((seen[i][12] << 8 | seen[i][13]) == type &&
			    (proto < 0 || seen[i][23] == proto)) {
				pthread_mutex_unlock(&seen_lock);
				return i;
			}
		}
		pthread_mutex_unlock(&seen_lock);
		usleep(10000);
	}
	return -1;
}

Test(slirp, arp_reply_and_hostfwd_syn, .timeout = 20)
{
	static const uint8_t gw_ip[4] = { 10, 0, 2, 2 };
	static const uint8_t guest_ip[4] = { 10, 0, 2, 15 };
	struct net_config cfg;
	struct net_backend *be;
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sa);
	char spec[128], err[256];
	uint8_t arp[42] = { 0 };
	int probe, port, fd, i;

	/* a free loopback port for the forward */
	probe = socket(AF_INET, SOCK_STREAM, 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert_eq(bind(probe, (struct sockaddr *)&sa, sizeof(sa)), 0);
	getsockname(probe, (struct sockaddr *)&sa, &sl);
	port = ntohs(sa.sin_port);
	close(probe);
	snprintf(spec, sizeof(spec),
		 "user,restrict=on,hostfwd=tcp:127.0.0.1:%d-:22", port);
	cr_assert_eq(net_config_parse(&cfg, spec, err, sizeof(err)), 0, "%s",
		     err);
	be = net_backend_open(&cfg, err, sizeof(err));
	cr_assert_not_null(be, "%s", err);
	cr_assert_eq(net_backend_start(be, record_frame, NULL, err,
				       sizeof(err)),
		     0, "%s", err);

	/* who has 10.0.2.2? tell 10.0.2.15 */
	memset(arp, 0xff, 6);
	memcpy(arp + 6, mac, 6);
	arp[12] = 0x08, arp[13] = 0x06;
	arp[14] = 0, arp[15] = 1, arp[16] = 0x08, arp[17] = 0;
	arp[18] = 6, arp[19] = 4, arp[20] = 0, arp[21] = 1;
	memcpy(arp + 22, mac, 6);
	memcpy(arp + 28, guest_ip, 4);
	memcpy(arp + 38, gw_ip, 4);
	net_backend_send(be, arp, sizeof(arp));
	i = wait_frame(0x0806, -1);
	cr_assert_geq(i, 0, "no ARP reply from the gateway");
	cr_assert_eq(seen[i][21], 2, "ARP reply");
	cr_assert_arr_eq(seen[i] + 28, gw_ip, 4);
	cr_assert_arr_eq(seen[i], mac, 6, "to the guest's MAC");

	/* the forward: a host connection becomes a SYN to guest port 22 */
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	sa.sin_port = htons(port);
	connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	i = wait_frame(0x0800, 6);
	cr_assert_geq(i, 0, "no TCP frame for the guest");
	cr_assert_arr_eq(seen[i] + 30, guest_ip, 4, "to 10.0.2.15");
	cr_assert_eq(seen[i][36] << 8 | seen[i][37], 22, "port 22");
	cr_assert(seen[i][47] & 0x02, "SYN");
	close(fd);
	net_backend_close(be);
	net_config_free(&cfg);
}

Test(slirp, hostfwd_port_in_use_is_an_error)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sa);
	struct net_config cfg;
	char spec[128], err[256] = "";
	int busy = socket(AF_INET, SOCK_STREAM, 0);

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert_eq(bind(busy, (struct sockaddr *)&sa, sizeof(sa)), 0);
	cr_assert_eq(listen(busy, 1), 0);
	getsockname(busy, (struct sockaddr *)&sa, &sl);
	snprintf(spec, sizeof(spec), "user,hostfwd=tcp:127.0.0.1:%d-:22",
		 ntohs(sa.sin_port));
	cr_assert_eq(net_config_parse(&cfg, spec, err, sizeof(err)), 0);
	cr_assert_null(net_backend_open(&cfg, err, sizeof(err)));
	cr_assert(strstr(err, "hostfwd"), "%s", err);
	net_config_free(&cfg);
	close(busy);
}

/* ---- the TAP backend ---------------------------------------------------------*/

/* A TAP interface of our own (gone when the backend closes it), up but
 * without an address: frames cross between the backend and a packet
 * socket on the interface, and go nowhere else.  Ethertype 0x88b5 is the
 * IEEE local experimental one. */
Test(tap, frames_both_ways, .timeout = 20)
{
	struct net_config cfg;
	struct net_backend *be;
	struct ifreq ifr = { 0 };
	struct sockaddr_ll sll = { .sll_family = AF_PACKET };
	char spec[64], name[IFNAMSIZ], err[256] = "";
	uint8_t frame[60], got[2048];
	int ctl, pkt, i;
	ssize_t n;

	snprintf(name, sizeof(name), "imgvmut%u", (unsigned)getpid() % 100000);
	snprintf(spec, sizeof(spec), "tap,ifname=%s", name);
	cr_assert_eq(net_config_parse(&cfg, spec, err, sizeof(err)), 0);
	be = net_backend_open(&cfg, err, sizeof(err));
	if (!be) {
		net_config_free(&cfg);
		cr_skip_test("no TAP interface can be made here: %s", err);
	}
	pthread_mutex_lock(&seen_lock);
	seen_count = 0;
	pthread_mutex_unlock(&seen_lock);
	cr_assert_eq(net_backend_start(be, record_frame, NULL, err,
				       sizeof(err)),
		     0, "%s", err);
	ctl = socket(AF_INET, SOCK_DGRAM, 0);
	strcpy(ifr.ifr_name, name);
	cr_assert_eq(ioctl(ctl, SIOCGIFFLAGS, &ifr), 0);
	ifr.ifr_flags |= IFF_UP;
	cr_assert_eq(ioctl(ctl, SIOCSIFFLAGS, &ifr), 0);
	pkt = socket(AF_PACKET, SOCK_RAW, htons(0x88b5));
	cr_assert_geq(pkt, 0);
	sll.sll_protocol = htons(0x88b5);
	sll.sll_ifindex = if_nametoindex(name);
	cr_assert_eq(bind(pkt, (struct sockaddr *)&sll, sizeof(sll)), 0);

	/* host -> the backend (what the guest would receive) */
	memcpy(frame, mac, 6);
	memcpy(frame + 6, "\x02\x00\x00\x00\x00\x01", 6);
	frame[12] = 0x88, frame[13] = 0xb5;
	for (i = 14; i < 60; i++)
		frame[i] = i * 3;
	cr_assert_eq(send(pkt, frame, sizeof(frame), 0), sizeof(frame));
	i = wait_frame(0x88b5, -1);
	cr_assert_geq(i, 0, "the TAP backend read nothing");
	cr_assert_eq(seen_len[i], sizeof(frame));
	cr_assert_arr_eq(seen[i], frame, sizeof(frame));

	/* the backend -> host (what the guest sends) */
	memcpy(frame, "\x02\x00\x00\x00\x00\x01", 6);
	memcpy(frame + 6, mac, 6);
	frame[59] = 0x77;
	net_backend_send(be, frame, sizeof(frame));
	{
		struct pollfd p = { .fd = pkt, .events = POLLIN };

		cr_assert_eq(poll(&p, 1, 5000), 1, "nothing on the interface");
	}
	n = recv(pkt, got, sizeof(got), 0);
	cr_assert_eq(n, sizeof(frame));
	cr_assert_arr_eq(got, frame, sizeof(frame));
	close(pkt);
	close(ctl);
	net_backend_close(be);
	net_config_free(&cfg);
}

/* ---- the fuzzer's seeds -------------------------------------------------------*/

/* The libFuzzer harness's decoder, run here on every seed (and every input
 * that once failed and became one), so make check replays them without
 * clang. */
#include "../fuzz/fuzz_virtio_net.c"

#include <dirent.h>

Test(fuzz_seeds, replay)
{
	const char *dir = "tests/fuzz/seeds/fuzz_virtio_net";
	DIR *d = opendir(dir);
	struct dirent *e;
	unsigned count = 0;

	cr_assert_not_null(d, "%s: run from the repository root", dir);
	while ((e = readdir(d))) {
		char path[512];
		uint8_t *buf;
		FILE *f;
		long size;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		f = fopen(path, "rb");
		cr_assert_not_null(f);
		fseek(f, 0, SEEK_END);
		size = ftell(f);
		rewind(f);
		buf = malloc(size ? size : 1);
		cr_assert_eq(fread(buf, 1, size, f), (size_t)size);
		fclose(f);
		cr_assert_eq(LLVMFuzzerTestOneInput(buf, size), 0, "%s", path);
		free(buf);
		count++;
	}
	closedir(d);
	cr_assert_geq(count, 5, "seeds missing");
}
