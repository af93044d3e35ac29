/**
 * Per-port counters, named from the guest's point of view: `tx*` = frames the guest sent,
 * `rx*` = frames delivered to the guest. Plain number fields (monotonic classes, no Map on the
 * hot path); rendered as Prometheus text on demand.
 * @module
 */

/** Counters of one port (one device behind one vhost-user socket). */
export class PortCounters {
  /** Frames taken from TX chains and handed to the backend. */
  txFrames = 0;
  txBytes = 0;
  /** TX frames dropped: malformed header, runt, chain too long, or backend could not send. */
  txDropped = 0;
  /** TX chains that were malformed (subset of txDropped). */
  txMalformed = 0;
  /** Frames written into RX chains. */
  rxFrames = 0;
  rxBytes = 0;
  /** RX frames dropped: no buffers and the hold queue full, queue not running, or too big. */
  rxDropped = 0;
  /** RX frames that had to wait for guest buffers (held). */
  rxHeld = 0;
  /** Frames larger than the guest's buffers (dropped, subset of rxDropped). */
  rxTooBig = 0;
  /**
   * SEND_RARP requests handled: a RARP handed to the backend as if the guest had sent it (it
   * takes the port's TX path, so a backend that drops it counts it in txDropped).
   */
  rarpRequests = 0;
  /** Control-queue commands handled / rejected. */
  ctrlCommands = 0;
  ctrlErrors = 0;
  /** Guest kicks seen on TX / RX queues. */
  txKicks = 0;
  rxKicks = 0;
  /** Interrupts sent / suppressed by the ring's notification rules. */
  notifies = 0;
  notifiesSuppressed = 0;
  /** Busy-poll spins (pollUs > 0) that found buffers / ran out their window; µs spent spinning. */
  pollHits = 0;
  pollMisses = 0;
  pollSpinUs = 0;

  /** A plain-object snapshot (for tests and JSON logs). */
  snapshot(): Record<string, number> {
    return { ...this } as unknown as Record<string, number>;
  }
}

const HELP: Record<string, [string, string]> = {
  txFrames: ['vhost_net_tx_frames_total', 'Frames the guest transmitted and the backend accepted'],
  txBytes: ['vhost_net_tx_bytes_total', 'Bytes (Ethernet frames) the guest transmitted'],
  txDropped: ['vhost_net_tx_dropped_total', 'TX frames dropped'],
  txMalformed: ['vhost_net_tx_malformed_total', 'TX chains with a malformed header or length'],
  rxFrames: ['vhost_net_rx_frames_total', 'Frames delivered to the guest'],
  rxBytes: ['vhost_net_rx_bytes_total', 'Bytes (Ethernet frames) delivered to the guest'],
  rxDropped: ['vhost_net_rx_dropped_total', 'Frames for the guest that were dropped'],
  rxHeld: ['vhost_net_rx_held_total', 'Frames that waited for guest RX buffers'],
  rxTooBig: ['vhost_net_rx_too_big_total', 'Frames larger than the guest RX buffers'],
  rarpRequests: ['vhost_net_rarp_requests_total', 'VHOST_USER_SEND_RARP requests: RARP broadcasts handed to the backend for the guest'],
  ctrlCommands: ['vhost_net_ctrl_commands_total', 'Control virtqueue commands'],
  ctrlErrors: ['vhost_net_ctrl_errors_total', 'Control virtqueue commands answered VIRTIO_NET_ERR'],
  txKicks: ['vhost_net_tx_kicks_total', 'Guest kicks on TX queues'],
  rxKicks: ['vhost_net_rx_kicks_total', 'Guest kicks on RX queues'],
  notifies: ['vhost_net_notifies_total', 'Used-buffer notifications sent to the guest'],
  notifiesSuppressed: ['vhost_net_notifies_suppressed_total', 'Used-buffer notifications suppressed'],
  pollHits: ['vhost_net_poll_hits_total', 'Busy-poll spins that found guest buffers'],
  pollMisses: ['vhost_net_poll_misses_total', 'Busy-poll spins that ran out their window'],
  pollSpinUs: ['vhost_net_poll_spin_microseconds_total', 'Microseconds spent busy-polling rings'],
};

/** Renders the counters of several ports as Prometheus text exposition format. */
export function countersToPrometheus(ports: ReadonlyArray<{ name: string; counters: PortCounters }>): string {
  const lines: string[] = [];
  for (const [field, [metric, help]] of Object.entries(HELP)) {
    lines.push(`# HELP ${metric} ${help}`, `# TYPE ${metric} counter`);
    for (const p of ports) {
      const v = (p.counters as unknown as Record<string, number>)[field];
      lines.push(`${metric}{port="${p.name.replace(/["\\\n]/g, '_')}"} ${v}`);
    }
  }
  return lines.join('\n') + '\n';
}

/** What {@link switchToPrometheus} reads: the switch's counters and its MAC table. */
export interface SwitchMetricsSource {
  readonly counters: { readonly unicast: number; readonly flooded: number; readonly hairpinDropped: number };
  readonly table: { readonly size: number; readonly overflows: number; readonly moves: number };
}

/** Renders the learning switch's own counters (not per port) as Prometheus text. */
export function switchToPrometheus(sw: SwitchMetricsSource): string {
  const rows: [string, 'counter' | 'gauge', string, number][] = [
    ['vhost_net_switch_unicast_total', 'counter', 'Frames forwarded to the one port their destination MAC was learned on', sw.counters.unicast],
    ['vhost_net_switch_flooded_total', 'counter', 'Frames flooded to every other port (broadcast, multicast, unknown destination)', sw.counters.flooded],
    ['vhost_net_switch_hairpin_dropped_total', 'counter', 'Frames dropped because their destination is the sending port', sw.counters.hairpinDropped],
    ['vhost_net_switch_mac_entries', 'gauge', 'Learned MAC addresses in the table', sw.table.size],
    ['vhost_net_switch_mac_overflows_total', 'counter', 'MAC addresses not learned because the table was full', sw.table.overflows],
    ['vhost_net_switch_mac_moves_total', 'counter', 'Learned MAC addresses that moved to another port', sw.table.moves],
  ];
  return rows.map(([metric, type, help, v]) => `# HELP ${metric} ${help}\n# TYPE ${metric} ${type}\n${metric} ${v}\n`).join('');
}
