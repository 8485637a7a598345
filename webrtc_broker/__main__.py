from webrtc_broker.cli import main

main()
