"""A stock oslo.messaging notification listener, as Ceilometer or an operator's script
runs one: every oslo.messaging option at its default (no configuration file is read), so
its exchange and queues are declared as oslo.messaging declares them by default
(amqp_durable_queues = false, amqp_auto_delete = false). Only the broker, the exchange
and the topic are given, as Ceilometer's targets give them
(Target(exchange=<service's control exchange>, topic=<notification topic>)).

It prints one JSON object a line on standard output for every notification it receives:
{"priority", "publisher_id", "event_type", "payload", "timestamp", "message_id"}, then
"READY ..." once its consumers are declared. SIGTERM or SIGINT stops it (exit 0). A
listener that cannot declare its queues fails with oslo.messaging's error (exit 1).
"""
import argparse
import json
import signal
import sys
import threading

from oslo_config import cfg
import oslo_messaging

# The priorities the autoscaler's conductor emits (conductor/notifier.rs,
# EMITTED_PRIORITIES): the listener consumes <topic>.info, .warn and .error.
PRIORITIES = ('info', 'warn', 'error')


class Printer:
    """An oslo.messaging notification endpoint with one method per priority."""

    def __init__(self, out):
        self.out = out
        self.lock = threading.Lock()

    def _print(self, priority, ctxt, publisher_id, event_type, payload, metadata):
        line = json.dumps({
            'priority': priority,
            'publisher_id': publisher_id,
            'event_type': event_type,
            'payload': payload,
            'timestamp': metadata.get('timestamp'),
            'message_id': metadata.get('message_id'),
        }, sort_keys=True)
        with self.lock:
            self.out.write(line + '\n')
            self.out.flush()

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        self._print('INFO', ctxt, publisher_id, event_type, payload, metadata)

    def warn(self, ctxt, publisher_id, event_type, payload, metadata):
        self._print('WARN', ctxt, publisher_id, event_type, payload, metadata)

    def error(self, ctxt, publisher_id, event_type, payload, metadata):
        self._print('ERROR', ctxt, publisher_id, event_type, payload, metadata)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--url', required=True,
                        help='the transport URL, e.g. rabbit://guest:guest@127.0.0.1:5672/')
    parser.add_argument('--exchange', required=True,
                        help="the autoscaler's [DEFAULT] control_exchange")
    parser.add_argument('--topic', default='notifications',
                        help="one of [oslo_messaging_notifications] topics")
    args = parser.parse_args()

    conf = cfg.ConfigOpts()
    conf([], project='oslo-listener', default_config_files=[], default_config_dirs=[])
    transport = oslo_messaging.get_notification_transport(conf, url=args.url)
    targets = [oslo_messaging.Target(exchange=args.exchange, topic=args.topic)]
    listener = oslo_messaging.get_notification_listener(
        transport, targets, [Printer(sys.stdout)], executor='threading')

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    listener.start()
    rabbit = conf.oslo_messaging_rabbit
    print('READY exchange=%s topic=%s queues=%s amqp_durable_queues=%s '
          'amqp_auto_delete=%s oslo.messaging=%s' % (
              args.exchange, args.topic,
              ','.join('%s.%s' % (args.topic, p) for p in PRIORITIES),
              rabbit.amqp_durable_queues, rabbit.amqp_auto_delete,
              oslo_messaging_version()), flush=True)
    stop.wait()
    listener.stop()
    listener.wait()
    transport.cleanup()
    return 0


def oslo_messaging_version():
    from importlib import metadata
    return metadata.version('oslo.messaging')


if __name__ == '__main__':
    sys.exit(main())
