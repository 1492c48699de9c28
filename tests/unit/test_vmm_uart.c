/* SPDX-License-Identifier: MIT */
/* 16550A: transmit through the buffered output, receive FIFO and overrun,
 * interrupt identification and IRQ 4, loopback and modem status, DLAB. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <unistd.h>

#include "vmm_test_util.h"

#define COM1 0x3f8

static struct vmm *vm;
static struct uart *uart;
static struct outbuf *out;
static int pipe_fds[2];

static void setup(void)
{
	vm = vmm_create_test(16u << 20);
	cr_assert_not_null(vm);
	cr_assert_eq(pipe(pipe_fds), 0);
	out = outbuf_create(pipe_fds[1]);
	cr_assert_not_null(out);
	uart = uart_create(vm, COM1, 4, out);
	cr_assert_not_null(uart);
}

static void teardown(void)
{
	uart_destroy(uart);
	outbuf_destroy(out);
	close(pipe_fds[0]);
	close(pipe_fds[1]);
	vmm_destroy(vm);
}

TestSuite(vmm_uart, .init = setup, .fini = teardown);

Test(vmm_uart, transmit)
{
	char buf[16] = { 0 };

	cr_assert_eq(inb(vm, COM1 + 5) & 0x60, 0x60, "THRE and TEMT");
	for (const char *p = "hello\n"; *p; p++)
		outb(vm, COM1, *p);
	outbuf_destroy(out); /* drains */
	out = NULL;
	cr_assert_eq(read(pipe_fds[0], buf, sizeof(buf)), 6);
	cr_assert_str_eq(buf, "hello\n");
}

Test(vmm_uart, receive_fifo_and_irq)
{
	uint8_t bytes[20];

	for (unsigned i = 0; i < sizeof(bytes); i++)
		bytes[i] = 'a' + i;
	cr_assert_eq(inb(vm, COM1 + 2) & 0x0f, 0x01, "no interrupt");
	cr_assert_eq(uart_receive(uart, bytes, sizeof(bytes)), 16,
		     "the FIFO holds 16");
	cr_assert_not(vm->gsi_level[4], "RDI not enabled yet");
	outb(vm, COM1 + 1, 0x01); /* IER: received data */
	cr_assert(vm->gsi_level[4]);
	cr_assert_eq(inb(vm, COM1 + 2) & 0x0f, 0x04);
	cr_assert_eq(inb(vm, COM1 + 5) & 0x01, 0x01, "DR");
	for (unsigned i = 0; i < 16; i++)
		cr_assert_eq(inb(vm, COM1), 'a' + i);
	cr_assert_eq(inb(vm, COM1 + 5) & 0x01, 0);
	cr_assert_not(vm->gsi_level[4], "line dropped when drained");
	/* reading an empty FIFO is harmless */
	cr_assert_eq(inb(vm, COM1), 0);
}

Test(vmm_uart, thre_interrupt)
{
	outb(vm, COM1 + 1, 0x02); /* IER: THR empty */
	cr_assert(vm->gsi_level[4]);
	cr_assert_eq(inb(vm, COM1 + 2) & 0x0f, 0x02);
	/* reading IIR acknowledged it */
	cr_assert_eq(inb(vm, COM1 + 2) & 0x0f, 0x01);
	cr_assert_not(vm->gsi_level[4]);
	/* the next transmitted byte raises it again */
	outb(vm, COM1, 'x');
	cr_assert(vm->gsi_level[4]);
}

Test(vmm_uart, loopback_modem_status_and_overrun)
{
	outb(vm, COM1 + 4, 0x10 | 0x01 | 0x02); /* LOOP, DTR, RTS */
	cr_assert_eq(inb(vm, COM1 + 6) & 0xf0, 0x30,
		     "DSR, CTS follow DTR, RTS");
	outb(vm, COM1, 0x42);
	cr_assert_eq(inb(vm, COM1 + 5) & 0x01, 0x01);
	cr_assert_eq(inb(vm, COM1), 0x42);
	/* outside input is not received in loopback */
	cr_assert_eq(uart_receive(uart, (const uint8_t *)"z", 1), 0);
	for (unsigned i = 0; i < 17; i++)
		outb(vm, COM1, i);
	cr_assert_eq(inb(vm, COM1 + 5) & 0x02, 0x02, "overrun");
	cr_assert_eq(inb(vm, COM1 + 5) & 0x02, 0, "cleared by reading LSR");
	outb(vm, COM1 + 4, 0);
	cr_assert_eq(inb(vm, COM1 + 6) & 0xb0, 0xb0, "carrier, DSR, CTS");
}

Test(vmm_uart, fifo_dlab_and_scratch)
{
	outb(vm, COM1 + 2, 0x01 | 0xc0);
	cr_assert_eq(inb(vm, COM1 + 2) & 0xc0, 0xc0, "FIFOs enabled");
	outb(vm, COM1 + 3, 0x80); /* DLAB */
	outb(vm, COM1, 0x01);
	outb(vm, COM1 + 1, 0x00);
	cr_assert_eq(inb(vm, COM1), 0x01);
	outb(vm, COM1 + 3, 0x03);
	cr_assert_eq(inb(vm, COM1 + 1), 0x00, "IER untouched by DLM");
	outb(vm, COM1 + 7, 0xa5);
	cr_assert_eq(inb(vm, COM1 + 7), 0xa5);
	/* a dword access spans registers without harm */
	(void)pio_read(vm, COM1 + 4, 4);
}
