// The programs of the node's container images (standard library only).
module webrtc-broker.test/nodeimages

go 1.24.0
