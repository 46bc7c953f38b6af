"""The inspection station: GPIO trigger and outputs, live web view, metrics, MQTT, watchdogs.

Built from the config by :class:`~edge.station.station.Station`; each optional library
(gpiozero, paho-mqtt, prometheus-client: ``pip install 'stampline[station]'``) is imported only
when its part is opened.
"""
