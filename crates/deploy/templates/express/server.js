'use strict';
const app = require('./app');

const port = Number(process.env.PORT || 3000);
const host = process.env.HOST || '0.0.0.0';
const server = app.listen(port, host, () => console.log(`listening on ${host}:${port}`));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
