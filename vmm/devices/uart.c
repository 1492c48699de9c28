// SPDX-License-Identifier: MIT
/*
 * A 16550A UART (National Semiconductor PC16550D data sheet): 16-byte
 * receive FIFO, interrupt identification by priority, loopback, scratch
 * register.  Transmitted bytes go straight to the output fd, so the
 * transmitter is always empty.
 */
#include <stdlib.h>
#include <string.h>

#include "vmm/machine.h"

#define UART_RBR 0 /* read; THR on write; DLL when DLAB */
#define UART_IER 1 /* DLM when DLAB */
#define UART_IIR 2 /* read; FCR on write */
#define UART_LCR 3
#define UART_MCR 4
#define UART_LSR 5
#define UART_MSR 6
#define UART_SCR 7

#define IER_RDI 0x01
#define IER_THRI 0x02
#define IER_RLSI 0x04
#define IER_MSI 0x08

#define IIR_NO_INT 0x01
#define IIR_MSI 0x00
#define IIR_THRI 0x02
#define IIR_RDI 0x04
#define IIR_RLSI 0x06
#define IIR_FIFO_ENABLED 0xc0

#define FCR_ENABLE 0x01
#define FCR_CLEAR_RX 0x02
#define FCR_CLEAR_TX 0x04

#define LCR_DLAB 0x80

#define MCR_DTR 0x01
#define MCR_RTS 0x02
#define MCR_OUT1 0x04
#define MCR_OUT2 0x08
#define MCR_LOOP 0x10

#define LSR_DR 0x01
#define LSR_OE 0x02
#define LSR_THRE 0x20
#define LSR_TEMT 0x40

#define MSR_CTS 0x10
#define MSR_DSR 0x20
#define MSR_RI 0x40
#define MSR_DCD 0x80

#define UART_FIFO_SIZE 16

struct uart {
	struct vmm *vm;
	pthread_mutex_t lock;
	pthread_cond_t rx_space;
	bool shut_down;
	unsigned gsi;
	struct outbuf *out;
	uint8_t ier, fcr, lcr, mcr, lsr, msr, scr, dll, dlm;
	bool thr_interrupt; /* THR empty, not yet acknowledged */
	bool irq_level;
	uint8_t rx[UART_FIFO_SIZE];
	unsigned rx_head, rx_count;
};

static uint8_t uart_iir(const struct uart *u)
{
	uint8_t fifo = u->fcr & FCR_ENABLE ? IIR_FIFO_ENABLED : 0;

	if (u->ier & IER_RLSI && u->lsr & LSR_OE)
		return IIR_RLSI | fifo;
	if (u->ier & IER_RDI && u->rx_count)
		return IIR_RDI | fifo;
	if (u->ier & IER_THRI && u->thr_interrupt)
		return IIR_THRI | fifo;
	if (u->ier & IER_MSI && u->msr & 0x0f)
		return IIR_MSI | fifo;
	return IIR_NO_INT | fifo;
}

static void uart_update_irq(struct uart *u)
{
	bool level = !(uart_iir(u) & IIR_NO_INT);

	if (level != u->irq_level) {
		u->irq_level = level;
		vmm_set_irq(u->vm, u->gsi, level);
	}
}

static void uart_push_rx(struct uart *u, uint8_t byte)
{
	if (u->rx_count == UART_FIFO_SIZE) {
		u->lsr |= LSR_OE;
		return;
	}
	u->rx[(u->rx_head + u->rx_count++) % UART_FIFO_SIZE] = byte;
	u->lsr |= LSR_DR;
}

static uint8_t uart_pop_rx(struct uart *u)
{
	uint8_t byte;

	if (!u->rx_count)
		return 0;
	byte = u->rx[u->rx_head];
	u->rx_head = (u->rx_head + 1) % UART_FIFO_SIZE;
	if (!--u->rx_count)
		u->lsr &= ~LSR_DR;
	pthread_cond_broadcast(&u->rx_space);
	return byte;
}

static void uart_transmit(struct uart *u, uint8_t byte)
{
	if (u->mcr & MCR_LOOP) {
		uart_push_rx(u, byte);
	} else if (u->out) {
		outbuf_put(u->out, &byte, 1);
	}
	u->thr_interrupt = true;
}

static uint8_t uart_modem_status(const struct uart *u)
{
	uint8_t msr = 0;

	if (!(u->mcr & MCR_LOOP))
		return MSR_DCD | MSR_DSR | MSR_CTS;
	if (u->mcr & MCR_DTR)
		msr |= MSR_DSR;
	if (u->mcr & MCR_RTS)
		msr |= MSR_CTS;
	if (u->mcr & MCR_OUT1)
		msr |= MSR_RI;
	if (u->mcr & MCR_OUT2)
		msr |= MSR_DCD;
	return msr;
}

static uint8_t uart_read(struct uart *u, unsigned reg)
{
	uint8_t value;

	switch (reg) {
	case UART_RBR:
		if (u->lcr & LCR_DLAB)
			return u->dll;
		return uart_pop_rx(u);
	case UART_IER:
		return u->lcr & LCR_DLAB ? u->dlm : u->ier;
	case UART_IIR:
		value = uart_iir(u);
		/* reading IIR acknowledges a THR-empty interrupt */
		if ((value & 0x0f) == IIR_THRI)
			u->thr_interrupt = false;
		return value;
	case UART_LCR:
		return u->lcr;
	case UART_MCR:
		return u->mcr;
	case UART_LSR:
		value = u->lsr | LSR_THRE | LSR_TEMT;
		u->lsr &= ~LSR_OE;
		return value;
	case UART_MSR:
		value = u->msr;
		u->msr &= 0xf0; /* delta bits clear on read */
		return value;
	default:
		return u->scr;
	}
}

static void uart_write(struct uart *u, unsigned reg, uint8_t value)
{
	switch (reg) {
	case UART_RBR:
		if (u->lcr & LCR_DLAB)
			u->dll = value;
		else
			uart_transmit(u, value);
		break;
	case UART_IER:
		if (u->lcr & LCR_DLAB) {
			u->dlm = value;
			break;
		}
		/* enabling THRI with an empty THR raises it at once */
		if (value & IER_THRI && !(u->ier & IER_THRI))
			u->thr_interrupt = true;
		u->ier = value & 0x0f;
		break;
	case UART_IIR:
		if ((value ^ u->fcr) & FCR_ENABLE || value & FCR_CLEAR_RX) {
			u->rx_count = 0;
			u->rx_head = 0;
			u->lsr &= ~LSR_DR;
			pthread_cond_broadcast(&u->rx_space);
		}
		u->fcr = value & 0xc9;
		break;
	case UART_LCR:
		u->lcr = value;
		break;
	case UART_MCR: {
		uint8_t old_msr = u->msr;

		u->mcr = value & 0x1f;
		u->msr = uart_modem_status(u);
		/* delta bits: CTS, DSR changed; RI trailing edge; DCD */
		u->msr |= ((old_msr ^ u->msr) >> 4) & 0x0b;
		if (old_msr & MSR_RI && !(u->msr & MSR_RI))
			u->msr |= 0x04;
		break;
	}
	case UART_LSR:
	case UART_MSR:
		break;
	default:
		u->scr = value;
		break;
	}
}

static void uart_io(void *opaque, uint64_t addr, void *data, unsigned size,
		    bool is_write)
{
	struct uart *u = opaque;
	uint8_t *bytes = data;

	pthread_mutex_lock(&u->lock);
	for (unsigned i = 0; i < size; i++) {
		unsigned reg = (addr + i) & 7;

		if (is_write)
			uart_write(u, reg, bytes[i]);
		else
			bytes[i] = uart_read(u, reg);
	}
	uart_update_irq(u);
	pthread_mutex_unlock(&u->lock);
}

size_t uart_receive(struct uart *u, const uint8_t *buf, size_t len)
{
	size_t taken = 0;

	pthread_mutex_lock(&u->lock);
	/* In loopback the line is disconnected from the outside. */
	while (!(u->mcr & MCR_LOOP) && taken < len &&
	       u->rx_count < UART_FIFO_SIZE)
		uart_push_rx(u, buf[taken++]);
	uart_update_irq(u);
	pthread_mutex_unlock(&u->lock);
	return taken;
}

bool uart_wait_rx_space(struct uart *u)
{
	bool alive;

	pthread_mutex_lock(&u->lock);
	while (!u->shut_down &&
	       (u->rx_count == UART_FIFO_SIZE || u->mcr & MCR_LOOP))
		pthread_cond_wait(&u->rx_space, &u->lock);
	alive = !u->shut_down;
	pthread_mutex_unlock(&u->lock);
	return alive;
}

void uart_shutdown(struct uart *u)
{
	pthread_mutex_lock(&u->lock);
	u->shut_down = true;
	pthread_cond_broadcast(&u->rx_space);
	pthread_mutex_unlock(&u->lock);
}

static void uart_reset(void *opaque)
{
	struct uart *u = opaque;

	pthread_mutex_lock(&u->lock);
	u->ier = 0;
	u->fcr = 0;
	u->lcr = 0;
	u->mcr = 0;
	u->lsr = 0;
	u->scr = 0;
	u->dll = 0x0c; /* 9600 baud */
	u->dlm = 0;
	u->msr = uart_modem_status(u);
	u->thr_interrupt = false;
	u->rx_head = 0;
	u->rx_count = 0;
	u->irq_level = false;
	pthread_cond_broadcast(&u->rx_space);
	pthread_mutex_unlock(&u->lock);
}

struct uart *uart_create(struct vmm *vm, uint16_t base, unsigned gsi,
			 struct outbuf *out)
{
	struct uart *u = calloc(1, sizeof(*u));

	if (!u)
		return NULL;
	u->vm = vm;
	u->gsi = gsi;
	u->out = out;
	pthread_mutex_init(&u->lock, NULL);
	pthread_cond_init(&u->rx_space, NULL);
	uart_reset(u);
	if (vmm_register_pio(vm, base, 8, uart_io, u)) {
		uart_destroy(u);
		return NULL;
	}
	vmm_on_reset(vm, uart_reset, u);
	return u;
}

void uart_destroy(struct uart *u)
{
	if (!u)
		return;
	pthread_cond_destroy(&u->rx_space);
	pthread_mutex_destroy(&u->lock);
	free(u);
}
