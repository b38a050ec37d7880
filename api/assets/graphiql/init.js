// GraphiQL against this server: queries and mutations over HTTP, subscriptions over WebSocket
// (graphql-transport-ws) on the same path. The headers panel's headers go with every request,
// and as the WebSocket's connection_init payload, which is where this server reads the key.
(function () {
  var http = new URL('/graphql', window.location.origin);
  var ws = new URL('/graphql', window.location.origin);
  ws.protocol = ws.protocol === 'https:' ? 'wss:' : 'ws:';
  ReactDOM.createRoot(document.getElementById('graphiql')).render(
    React.createElement(GraphiQL, {
      fetcher: GraphiQL.createFetcher({ url: http.toString(), subscriptionUrl: ws.toString() }),
      defaultHeaders: JSON.stringify({ Authorization: 'Bearer <paste your API key here>' }, null, 2),
      defaultQuery: '# Put your API key in the Headers panel below, then run:\n{\n  me {\n    tenant {\n      name\n    }\n  }\n}\n',
      defaultEditorToolsVisibility: 'headers',
    })
  );
})();
